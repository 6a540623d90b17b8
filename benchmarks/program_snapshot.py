"""Hashes of every program the model zoo and the differential suite compile: the proof that
a refactoring left the compiler's output byte for byte the same.

    python benchmarks/program_snapshot.py --models /tmp/zoo -o before.json      # old checkout
    python benchmarks/program_snapshot.py --models /tmp/zoo -o after.json --compare before.json

The zoo models are exported once into --models and reused, so two checkouts compile the
same files. Each entry hashes the printed program and its constants (names, dtypes, shapes,
bytes). Cases: every family x exporter (legacy ONNX, dynamo ONNX, torch.export .pt2) x
preset (tiny, odd) on archs tiny and default; prefill, decode and warm-decode programs of
the decoder families; differential seeds 0..N-1 on their random archs. A case the compiler
refuses records its error message (the refusal must stay the same too).
Exit 1 when --compare finds a difference. --without-comments hashes the programs with
their comments left out: a change that renames only source locations (the instructions'
trailing comments) shows as no difference that way, run on both checkouts.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ARCHS = ("tiny", "default")
PRESETS = ("tiny", "odd")
SEQ_LEN = 8
DECODERS = ("gpt2", "llama", "qwen2")


Hasher = Callable[[Any, dict[str, np.ndarray]], str]


def program_hash(program: Any, consts: dict[str, np.ndarray]) -> str:
    from dataclasses import replace

    from cimc.machine.printer import print_program

    h = hashlib.sha256(print_program(replace(program, source_name=None)).encode())
    for name in sorted(consts):
        value = np.ascontiguousarray(consts[name])
        h.update(f"{name}:{value.dtype}:{value.shape}".encode())
        h.update(value.tobytes())
    return h.hexdigest()[:16]


def export_zoo(models: Path) -> Iterator[tuple[str, Path]]:
    """(case name, model file) of every family x preset x exporter, exported once."""
    import torch

    from cimc.zoo import FAMILIES, build_model, example_inputs, export_onnx, export_torch

    for family in sorted(FAMILIES):
        for preset in PRESETS:
            head = "lm" if FAMILIES[family].decoder else "hidden"
            for exporter in ("legacy", "dynamo", "torch_export"):
                suffix = "pt2" if exporter == "torch_export" else "onnx"
                path = models / f"{family}-{preset}-{exporter}.{suffix}"
                if not path.exists():
                    model = build_model(family, preset, head=head)
                    inputs = example_inputs(model, seq_len=SEQ_LEN)
                    try:
                        with _quiet():
                            if exporter == "torch_export":
                                torch.export.save(export_torch(model, inputs), str(path))
                            else:
                                export_onnx(model, inputs, path, exporter=exporter)
                    except Exception as e:  # noqa: BLE001 - an exporter's own limits
                        print(f"  skip {path.name}: export failed ({type(e).__name__})")
                        continue
                yield path.stem, path


def without_comments_hash(program: Any, consts: dict[str, np.ndarray]) -> str:
    """program_hash of the program with every comment (full-line and trailing) removed."""
    from dataclasses import replace

    from cimc.machine.program import Comment, Instr

    def bare(items: tuple) -> tuple:
        kept = (i for i in items if not isinstance(i, Comment))
        return tuple(replace(i, comment=None) if isinstance(i, Instr) else i for i in kept)

    cores = tuple(replace(s, items=bare(s.items)) for s in program.cores)
    return program_hash(replace(program, header=bare(program.header), cores=cores), consts)


def zoo_cases(
    models: Path, hasher: Hasher, mapping: str | None
) -> Iterator[tuple[str, Callable[[], str]]]:
    from cimc.machine.arch import load_arch
    from cimc.pipeline import PipelineOptions, compile_model

    for stem, path in export_zoo(models):
        for arch in ARCHS:

            def case(path: Path = path, arch: str = arch) -> str:
                options = PipelineOptions(seq_len=SEQ_LEN, mapping=mapping)
                r = compile_model(path, load_arch(arch), options)
                return hasher(r.compiled.program, r.compiled.consts)

            yield f"zoo/{stem}/{arch}", case


def decode_cases(
    models: Path, hasher: Hasher, mapping: str | None
) -> Iterator[tuple[str, Callable[[], str]]]:
    from cimc.decode.programs import build_decoder
    from cimc.machine.arch import load_arch
    from cimc.pipeline import PipelineOptions

    for family in DECODERS:
        path = models / f"{family}-tiny-dynamo.onnx"

        def case(path: Path = path) -> str:
            options = PipelineOptions(mapping=mapping)
            progs = build_decoder(path, load_arch("tiny"), 3, 8, options)
            parts = [progs.prefill.program, progs.decode.program]
            if progs.warm is not None:
                parts += [progs.warm.cold, progs.warm.warm]
            return "-".join(hasher(p, progs.consts) for p in parts)

        yield f"decode/{family}", case


def differential_cases(
    n: int, hasher: Hasher, mapping: str | None
) -> Iterator[tuple[str, Callable[[], str]]]:
    import tempfile

    from cimc.pipeline import PipelineOptions, compile_model
    from tests.differential.generator import random_arch, random_spec
    from tests.differential.runner import exporter_for, import_case

    for seed in range(n):

        def case(seed: int = seed) -> str:
            spec = random_spec(seed)
            with tempfile.TemporaryDirectory() as tmp:
                graph = import_case(spec, exporter_for(seed, spec), Path(tmp))
            r = compile_model(graph, random_arch(seed), PipelineOptions(mapping=mapping))
            return hasher(r.compiled.program, r.compiled.consts)

        yield f"differential/{seed}", case


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stderr(io.StringIO()),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        yield


def run(cases: Iterator[tuple[str, Callable[[], str]]]) -> dict[str, str]:
    from cimc.errors import CimcError

    out: dict[str, str] = {}
    for name, case in cases:
        try:
            with _quiet():
                out[name] = case()
        except CimcError as e:
            out[name] = f"error: {str(e).splitlines()[0]}"
        print(f"  {name}: {out[name]}", flush=True)
    return out


def compare(now: dict[str, str], before: dict[str, str]) -> int:
    differ = sorted(k for k in before.keys() & now.keys() if before[k] != now[k])
    missing = sorted(before.keys() - now.keys())
    extra = sorted(now.keys() - before.keys())
    programs = sum(1 for k in now if not now[k].startswith("error"))
    print(f"{len(now)} cases ({programs} compiled), {len(differ)} differ, "
          f"{len(missing)} missing, {len(extra)} new")  # fmt: skip
    for k in differ:
        print(f"  DIFFERS {k}: {before[k]} -> {now[k]}")
    for k in missing:
        print(f"  MISSING {k}")
    return 1 if differ or missing else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, required=True, help="exported zoo models (cache)")
    p.add_argument("--differential", type=int, default=60, help="differential seeds 0..N-1")
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--compare", type=Path)
    p.add_argument("--without-comments", action="store_true", help="hash without comments")
    p.add_argument("--mapping", help="the map pass's mapping (default: the compiler's own)")
    args = p.parse_args()
    hasher = without_comments_hash if args.without_comments else program_hash
    import torch

    torch.set_num_threads(1)
    args.models.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    hashes: dict[str, str] = {}
    for cases in (
        zoo_cases(args.models, hasher, args.mapping),
        decode_cases(args.models, hasher, args.mapping),
        differential_cases(args.differential, hasher, args.mapping),
    ):
        hashes.update(run(cases))
    args.out.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    print(f"{len(hashes)} cases in {time.perf_counter() - started:.0f} s -> {args.out}")
    if args.compare:
        return compare(hashes, json.loads(args.compare.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
