"""One differential case: generate, export, compile on a random arch, verify bit-exact.

Outcomes: `bit-exact`; `compile-error` (a CimcError: the compiler refused the case with a
message, e.g. the arch is too small); `mismatch` (interpreter != golden: a bug, with the
first diverging value); `crash` (any other exception: a bug, with its traceback).
"""

from __future__ import annotations

import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from cimc.errors import CimcError
from cimc.ir.graph import Graph
from cimc.pipeline import PipelineOptions, compile_model
from cimc.verify import verify_compiled
from tests.differential.generator import (
    ModelSpec,
    build_module,
    example_input,
    random_arch,
    random_spec,
)

EXPORTERS = ("torch.export", "onnx-legacy")
BUGS = ("mismatch", "crash")


@dataclass(frozen=True)
class Outcome:
    seed: int
    exporter: str
    kind: str  # bit-exact | compile-error | mismatch | crash
    detail: str
    spec: ModelSpec
    arch: str
    seconds: float

    def line(self) -> str:
        return (
            f"seed={self.seed} exporter={self.exporter} {self.kind}: {self.detail}\n"
            f"  model: {self.spec.describe()}\n  arch: {self.arch}"
        )


def exporter_for(seed: int, spec: ModelSpec) -> str:
    """Alternate exporters (repeat_interleave GQA reaches ONNX as Unsqueeze + Tile)."""
    return EXPORTERS[seed % len(EXPORTERS)]


def import_case(spec: ModelSpec, exporter: str, workdir: Path) -> Graph:
    from cimc.api import import_model

    module, x = build_module(spec), torch.from_numpy(example_input(spec))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torch.export":
            return import_model(module, example_inputs=(x,))
        path = workdir / f"case{spec.seed}.onnx"
        torch.onnx.export(module, (x,), str(path), input_names=["x"], dynamo=False)
        return import_model(path)


def _arch_text(seed: int) -> str:
    a = random_arch(seed)
    return (
        f"{a.name} cores={a.chip.cores} mesh={a.chip.mesh} macros={a.core.macros} "
        f"{a.macro.rows}x{a.macro.cols} sp={a.core.scratchpad_bytes} lanes={a.core.vector_lanes} "
        f"gb={a.memory.gb_bytes}"
    )


def run_case(seed: int, exporter: str | None = None, mapping: str | None = None) -> Outcome:
    """`mapping`: the map pass's (None: the compiler's default)."""
    spec = random_spec(seed)
    exporter = exporter or exporter_for(seed, spec)
    started = time.perf_counter()
    kind, detail = _run(spec, exporter, seed, mapping)
    return Outcome(
        seed, exporter, kind, detail, spec, _arch_text(seed), time.perf_counter() - started
    )


def _run(spec: ModelSpec, exporter: str, seed: int, mapping: str | None) -> tuple[str, str]:
    try:
        with tempfile.TemporaryDirectory() as tmp:
            graph = import_case(spec, exporter, Path(tmp))
        result = compile_model(graph, random_arch(seed), PipelineOptions(mapping=mapping))
        feeds = {"x": example_input(spec)} if "x" in _input_names(result.float_graph) else None
        if feeds is None:
            from cimc.reference.float_model import default_inputs

            feeds = default_inputs(result.float_graph, seed=seed)
        report = verify_compiled(result.compiled, result.float_graph, feeds, with_figures=False)
    except CimcError as e:
        return "compile-error", str(e).splitlines()[0]
    except Exception:  # noqa: BLE001 - any other exception is a finding
        return "crash", traceback.format_exc(limit=-4).strip().replace("\n", "\n    ")
    if report.bit_exact:
        return "bit-exact", f"cosine vs float {report.cosine_vs_float:.4f}"
    div = report.divergence.message() if report.divergence else "no divergence found"
    return "mismatch", f"{report.mismatched_elements} elements differ; {div}"


def _input_names(graph: Graph) -> list[str]:
    return [n.name for n in graph.input_nodes()]


def summarize(outcomes: list[Outcome]) -> dict[str, int]:
    counts = {"bit-exact": 0, "compile-error": 0, "mismatch": 0, "crash": 0}
    for o in outcomes:
        counts[o.kind] += 1
    return counts
