"""The family matrix: every zoo family x exporter x model preset, compiled for arch presets
and checked bit-exact against the integer golden (and for accuracy against the float model).

    python -m tests.e2e.family_matrix                    # the whole table (about 20 min)
    python -m tests.e2e.family_matrix --family t5 --arch tiny

Families: the HF text families of cimc.zoo (token ids and a padded attention mask), ViT and
Whisper's encoder (cimc.zoo.encoders), the ResNet / MobileNetV2 CNNs (cimc.zoo.cnn).
Exporters: torch.onnx.export legacy (dynamo=False) and dynamo (dynamic batch and sequence
axes for text), torch.export. Each exported model is imported once and compiled for every
arch. tests/e2e/test_family_matrix.py runs each cell as a slow test.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TEXT = ("bert", "distilbert", "gpt2", "llama", "qwen2", "roberta", "xlm-roberta", "camembert", "t5")
ENCODERS = ("vit", "whisper")
CNNS = ("resnet", "mobilenetv2")
EXPORTERS = ("legacy", "dynamo", "torch_export")
MODEL_PRESETS = ("tiny", "odd")
ARCHS = ("tiny", "default")
SEQ_LEN = 8

# What an exporter needs from a family to export it at all (its limits, not cimc's):
# torch 2.13's dynamo exporter fails on T5's sdpa path (a view of a transposed
# attention output), so T5 goes through it with eager attention, as users do.
EXPORT_OVERRIDES = {("t5", "dynamo"): {"attn_implementation": "eager"}}


@dataclass(frozen=True)
class Case:
    family: str
    preset: str
    exporter: str

    @property
    def name(self) -> str:
        return f"{self.family}-{self.preset}-{self.exporter}"


@dataclass(frozen=True)
class Outcome:
    case: Case
    arch: str
    bit_exact: bool
    cosine: float
    seconds: float
    error: str = ""


def cases() -> list[Case]:
    out = []
    for family in (*TEXT, *ENCODERS, *CNNS):
        presets = ("tiny",) if family in CNNS else MODEL_PRESETS
        out += [Case(family, p, e) for p in presets for e in EXPORTERS]
    return out


def _module_and_inputs(case: Case) -> tuple[object, tuple, dict[str, np.ndarray]]:
    from cimc.zoo import build_cnn, build_encoder, build_model, cnn_input, encoder_input
    from cimc.zoo.models import FAMILIES

    if case.family in CNNS:
        model = build_cnn(case.family, case.preset)
        x = cnn_input(model)
        return model, (x,), {"x": x.numpy()}
    if case.family in ENCODERS:
        model = build_encoder(case.family, case.preset)
        x = encoder_input(model)
        return model, (x,), {"x": x.numpy()}
    head = "lm" if FAMILIES[case.family].decoder else "hidden"
    extra = EXPORT_OVERRIDES.get((case.family, case.exporter), {})
    model = build_model(case.family, case.preset, head=head, **extra)
    ids, mask = build_inputs(model)
    return model, (ids, mask), {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}


def build_inputs(model: object) -> tuple:
    from cimc.zoo import example_inputs

    return example_inputs(model, seq_len=SEQ_LEN, padded=True)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=4)
def import_case(case: Case) -> tuple[object, dict[str, np.ndarray]]:
    """The case's model exported its way and imported (cached: one import, every arch)."""
    import torch

    from cimc.api import import_model
    from cimc.zoo import export_onnx, export_torch

    model, inputs, feeds = _module_and_inputs(case)
    text = case.family in TEXT
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")
        if case.exporter == "torch_export":
            program = export_torch(model, inputs) if text else torch.export.export(model, inputs)  # type: ignore[arg-type]
            graph = import_model(program, seq_len=SEQ_LEN if text else None)
        elif text:
            path = export_onnx(model, inputs, Path(tmp) / "m.onnx", case.exporter)  # type: ignore[arg-type]
            graph = import_model(str(path), seq_len=SEQ_LEN)
        else:
            path = Path(tmp) / "m.onnx"
            _export_plain(model, inputs, path, case.exporter)
            graph = import_model(str(path))
    return graph, feeds


def _export_plain(model: object, inputs: tuple, path: Path, exporter: str) -> None:
    import contextlib
    import io

    import torch

    with contextlib.redirect_stdout(io.StringIO()):
        result = torch.onnx.export(
            model,  # type: ignore[arg-type]
            inputs,
            str(path),
            dynamo=exporter == "dynamo",
            input_names=["x"],
            output_names=["output"],
            opset_version=18,
        )
    if exporter == "dynamo" and result is not None:
        result.save(str(path))


def run_case(case: Case, arch: str) -> Outcome:
    from tests.e2e.e2e_helpers import compile_and_verify

    start = time.perf_counter()
    graph, feeds = import_case(case)
    _, report = compile_and_verify(graph, arch, feeds)  # type: ignore[arg-type]
    return Outcome(
        case, arch, report.bit_exact, float(report.cosine_vs_float), time.perf_counter() - start
    )


def run_all(families: set[str] | None, archs: tuple[str, ...]) -> Iterator[Outcome]:
    from cimc.errors import CimcError

    for case in cases():
        if families and case.family not in families:
            continue
        for arch in archs:
            start = time.perf_counter()
            try:
                yield run_case(case, arch)
            except (CimcError, Exception) as e:  # noqa: BLE001 - the table shows every failure
                first = (str(e).splitlines() or [type(e).__name__])[0][:160]
                yield Outcome(case, arch, False, 0.0, time.perf_counter() - start, first)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", action="append", help="only these families (repeatable)")
    p.add_argument("--arch", action="append", choices=ARCHS, help="only these archs")
    args = p.parse_args()
    archs = tuple(args.arch or ARCHS)
    print("| family | preset | exporter | arch | bit-exact | cosine vs float | seconds |")
    print("|---|---|---|---|---|---|---|")
    bad = 0
    for o in run_all(set(args.family or ()), archs):
        c = o.case
        status = "yes" if o.bit_exact else f"NO {o.error}"
        bad += not o.bit_exact
        print(f"| {c.family} | {c.preset} | {c.exporter} | {o.arch} | {status} | "
              f"{o.cosine:.5f} | {o.seconds:.1f} |", flush=True)  # fmt: skip
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
