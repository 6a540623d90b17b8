"""The whole compiler: import -> graph passes (canonicalize, quantize) -> backend.

    result = compile_model("bert.onnx", load_arch("default"), PipelineOptions(seq_len=16))
    write_compiled(result.compiled, Path("bert.cimasm"))

The graph passes run under the pass manager (verified after each, printable with
`print_ir_after_all` / `print_ir_after`, timed with `time_passes`). The pipeline is cut
before `quantize` so the float graph after the float passes is kept: it is the accuracy
reference of `cimc verify`. The backend step is timed with the passes, as `backend`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cimc.backend.compile import Compiled, compile_graph
from cimc.errors import CimcError
from cimc.ir.graph import Graph
from cimc.machine.arch import Arch
from cimc.machine.state import gc_paused
from cimc.passes.manager import Pass, PassManager, PassTiming, parse_pipeline
from cimc.passes.quantize import Quantize
from cimc.progress import report

DEFAULT_PIPELINE = "canonicalize,check-canonical,quantize"
QUANTIZE = "quantize"


@dataclass(frozen=True)
class PipelineOptions:
    """What `cimc compile` / `cimc verify` pass down (all optional)."""

    pipeline: str = DEFAULT_PIPELINE
    seq_len: int | None = None
    shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)
    calibration: str | None = None
    print_ir_after_all: bool = False
    print_ir_after: tuple[str, ...] = ()
    time_passes: bool = False
    print_fn: Callable[[str], object] | None = None
    streaming: str = "auto"  # weight streaming policy (cimc/backend/compile.py module doc)


@dataclass(frozen=True)
class PipelineResult:
    float_graph: Graph  # after the passes before `quantize`: the accuracy reference
    graph: Graph  # the quantized graph the backend compiled
    compiled: Compiled
    timings: tuple[PassTiming, ...]


def load_model(model: Any, options: PipelineOptions) -> Graph:
    """Import a model file or torch module (shapes bound by seq_len / shapes)."""
    if isinstance(model, Graph):
        return model
    from cimc.api import import_model

    return import_model(model, shapes=dict(options.shapes) or None, seq_len=options.seq_len)


def split_pipeline(passes: Sequence[Pass]) -> tuple[list[Pass], list[Pass]]:
    """(float passes, quantize and after); a pipeline without quantize is refused."""
    names = [p.NAME for p in passes]
    if QUANTIZE not in names:
        raise CimcError(
            f"the pipeline must contain '{QUANTIZE}' (the backend compiles integer graphs); "
            f"default: {DEFAULT_PIPELINE}",
            "pipeline",
        )
    cut = names.index(QUANTIZE)
    return list(passes[:cut]), list(passes[cut:])


def _with_calibration(passes: list[Pass], path: str | None) -> list[Pass]:
    if path is None:
        return passes
    return [replace(p, calibration=path) if isinstance(p, Quantize) else p for p in passes]


def compile_model(model: Any, arch: Arch, options: PipelineOptions | None = None) -> PipelineResult:
    """Import (unless given a Graph), run the graph passes, compile for `arch`."""
    options = options or PipelineOptions()
    before, after = split_pipeline(parse_pipeline(options.pipeline))
    steps = 2 + len(before) + len(after)  # import, every pass, backend
    report("compile", 0, steps, "import")
    graph = load_model(model, options)
    after = _with_calibration(after, options.calibration)
    float_manager = _manager(before, options, first_step=1, steps=steps)
    quant_manager = _manager(after, options, first_step=1 + len(before), steps=steps)
    float_graph = float_manager.run(graph.copy())
    qgraph = quant_manager.run(float_graph.copy())
    report("compile", steps - 1, steps, "backend")
    timings = [*float_manager.timings, *quant_manager.timings]
    started = time.perf_counter()
    policy: Any = options.streaming  # checked by compile_graph (a CimcError names the choices)
    with gc_paused():  # builds ~10^5 instruction objects and no cycles: no GC passes
        compiled = compile_graph(qgraph, arch, name=_stem(model), streaming=policy)
    timings.append(PassTiming("backend", time.perf_counter() - started, True))
    report("compile", steps, steps)
    if options.time_passes:
        _print(options, _timing_report(timings))
    return PipelineResult(float_graph, qgraph, compiled, tuple(timings))


def _manager(
    passes: list[Pass], options: PipelineOptions, first_step: int, steps: int
) -> PassManager:
    """A manager whose passes are steps `first_step...` of the `steps` of "compile"."""

    def on_pass(k: int, p: Pass) -> None:
        report("compile", first_step + k, steps, f"pass {p.NAME}")

    return PassManager(
        passes,
        print_ir_after_all=options.print_ir_after_all,
        print_ir_after=options.print_ir_after,
        print_fn=options.print_fn,
        on_pass=on_pass,
    )


def _stem(model: Any) -> str:
    from pathlib import Path

    if isinstance(model, str | Path):
        return Path(model).stem or "model"
    return "model"


def _print(options: PipelineOptions, text: str) -> None:
    (options.print_fn or sys.stderr.write)(text)


def _timing_report(timings: Sequence[PassTiming]) -> str:
    total = sum(t.seconds for t in timings)
    lines = ["// ----- pass timing ----- //"]
    for t in timings:
        share = 100 * t.seconds / total if total else 0.0
        changed = "" if t.modified else "  (no change)"
        lines.append(f"{t.seconds * 1000:10.3f} ms {share:5.1f}%  {t.name}{changed}")
    lines.append(f"{total * 1000:10.3f} ms 100.0%  total")
    return "\n".join(lines) + "\n"
