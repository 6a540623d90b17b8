"""The whole compiler as one pass pipeline: import, then graph passes, then the backend.

    result = compile_model("bert.onnx", load_arch("default"), PipelineOptions(seq_len=16))
    write_compiled(result.compiled, Path("bert.cimasm"), DEFAULT_PIPELINE)  # + .safetensors

`compile_model` parses the pipeline (default `DEFAULT_PIPELINE`), expands composite passes
(`backend` = tile, map, plan-values, plan-memory, plan-sparsity, lower, stage-consts,
hoist-const-loads, merge-sends) and runs it under the pass manager: every pass verified,
printable and timed, the import timed with them. The run is cut into three parts, kept in
the result:
- float: the passes before `quantize`; their graph is the accuracy reference of `verify`;
- quantized: `quantize` and any graph pass after it; the integer golden runs that graph;
- backend: from the first pass that leaves the graph level to the end (a program).
A pipeline that stops at a graph gets the `backend` passes appended; decode runs the first
two parts once and the third for each specialized graph (cimc/decode/programs.py).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cimc.backend.builder.compiled import Compiled
from cimc.backend.lower.table import LoweringTable
from cimc.backend.stages.backend import Backend, configure_backend
from cimc.errors import CimcError
from cimc.ir.graph import Graph
from cimc.machine.arch import Arch
from cimc.passes.manager import (
    Pass,
    PassManager,
    PassTiming,
    Step,
    check_levels,
    expand,
    parse_pipeline,
    timing_report,
    verify_deep,
)
from cimc.passes.predict_sparsity import PredictSparsity
from cimc.passes.quantize import Quantize
from cimc.progress import report

DEFAULT_PIPELINE = "idioms,check-canonical,quantize,backend"
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
    print_ir_before: tuple[str, ...] = ()
    print_ir_after_change: bool = False
    time_passes: bool = False
    validate_each: bool = False  # the machine's validator after every program pass, not once
    print_fn: Callable[[str], object] | None = None
    streaming: str | None = None  # overrides the map pass's policy (backend/plan/streaming.py)
    mapping: str | None = None  # overrides the map pass's mapping (backend/plan/duplication.py)
    stages: int | None = None  # the map pass's pipeline stages (backend/plan/pipeline.py)
    micro_batches: int | None = None  # and its micro-batches (backend/plan/micro_batch.py)
    sparsity: str | None = None  # overrides plan-sparsity's mode (backend/plan/sparsity.py)
    window: int | None = None  # plan-sparsity's window (backend/plan/window.py)
    weight_bits: int | None = None  # overrides quantize's weight_bits (4: packed int4)
    keep_int8: tuple[str, ...] = ()  # linears whose node name holds one of these stay int8
    weight_group: int | None = None  # overrides quantize's weight_group (group-wise scales)


@dataclass(frozen=True)
class PipelineResult:
    float_graph: Graph  # after the passes before `quantize`: the accuracy reference
    graph: Graph  # the quantized graph the backend compiled
    compiled: Compiled
    timings: tuple[PassTiming, ...]


@dataclass(frozen=True)
class Stages:
    """A pipeline's passes cut at `quantize` and at the first pass leaving the graph level."""

    float: list[Step]
    quantized: list[Step]
    backend: list[Step]


def load_model(model: Any, options: PipelineOptions) -> Graph:
    """Translate a model file or torch module (shapes bound by seq_len / shapes); the
    pipeline's `idioms` pass canonicalizes it."""
    if isinstance(model, Graph):
        return model
    from cimc.api import import_model

    shapes = dict(options.shapes) or None
    return import_model(model, shapes=shapes, seq_len=options.seq_len, canonicalize=False)


def pipeline_stages(options: PipelineOptions, configure: Callable[[Pass], Pass]) -> Stages:
    """The options' pipeline expanded, each pass passed through `configure`, and cut."""
    steps = [Step(configure(s.p), s.group) for s in expand(parse_pipeline(options.pipeline))]
    if steps and steps[-1].p.OUTPUT == "graph":
        steps += [Step(configure(s.p), s.group) for s in expand([Backend()])]
    check_levels(steps)
    names = [s.p.NAME for s in steps]
    if QUANTIZE not in names:
        raise CimcError(
            f"the pipeline must contain '{QUANTIZE}' (the backend compiles integer graphs); "
            f"default: {DEFAULT_PIPELINE}",
            "pipeline",
        )
    cut = names.index(QUANTIZE)
    end = next(k for k in range(cut, len(steps)) if steps[k].p.OUTPUT != "graph")
    if options.sparsity == "predict" and PredictSparsity.NAME not in names:
        steps.insert(end, Step(configure(PredictSparsity())))  # fitted on the integer graph
        end += 1
    if steps[-1].p.OUTPUT != "program":
        raise CimcError(f"the pipeline ends at a {steps[-1].p.OUTPUT}, not a program", "pipeline")
    return Stages(steps[:cut], steps[cut:end], steps[end:])


def configurer(
    arch: Arch,
    options: PipelineOptions,
    name: str = "model",
    table: LoweringTable | None = None,
    calibration: str | None = None,
) -> Callable[[Pass], Pass]:
    """Set on each pass what the caller knows: calibration on quantize, the arch, policy,
    program name and lowering table on the backend's passes."""

    def configure(p: Pass) -> Pass:
        if isinstance(p, Quantize):
            p = with_weight_options(p, options)
            return replace(p, calibration=calibration) if calibration is not None else p
        if isinstance(p, PredictSparsity):
            return replace(p, calibration=calibration) if calibration is not None else p
        return configure_backend(
            p,
            arch,
            name,
            options.streaming,
            table,
            options.sparsity,
            options.window,
            options.mapping,
            options.stages,
            options.micro_batches,
        )

    return configure


def with_weight_options(p: Quantize, options: PipelineOptions) -> Quantize:
    """quantize with the weight precision the caller asked for (`--weight-bits`,
    `--keep-int8`), its own options otherwise."""
    if options.weight_bits is not None:
        p = replace(p, weight_bits=options.weight_bits)
    if options.keep_int8:
        p = replace(p, keep_int8="+".join(options.keep_int8))
    if options.weight_group is not None:
        p = replace(p, weight_group=options.weight_group)
    return p


def compile_model(model: Any, arch: Arch, options: PipelineOptions | None = None) -> PipelineResult:
    """Import (unless given a Graph) and run the pipeline for `arch`."""
    options = options or PipelineOptions()
    configure = configurer(arch, options, _stem(model), calibration=options.calibration)
    stages = pipeline_stages(options, configure)
    steps = 1 + len(stages.float) + len(stages.quantized) + len(stages.backend)
    report("compile", 0, steps, "import")
    started = time.perf_counter()
    graph = load_model(model, options)
    timings = [PassTiming("import", time.perf_counter() - started, True)]
    managers = []
    first = 1
    for part in (stages.float, stages.quantized, stages.backend):
        managers.append(manager(part, options, first, steps))
        first += len(part)
    float_graph = managers[0].run(graph.copy())
    del graph  # the import's own arrays (a transposed weight's original) go now
    qgraph = managers[1].run(float_graph.copy())
    compiled = managers[2].run(qgraph)
    verify_deep(compiled)
    report("compile", steps, steps)
    for m in managers:
        timings += m.timings
    if options.time_passes:
        _print(options, timing_report(timings))
    return PipelineResult(float_graph, qgraph, compiled, tuple(timings))


def manager(
    steps: list[Step], options: PipelineOptions, first_step: int = 0, total: int = 0
) -> PassManager:
    """A manager printing as the options ask, whose passes are steps `first_step...` of
    the `total` steps of "compile" in the progress display."""

    def on_pass(k: int, p: Pass) -> None:
        if total:
            report("compile", first_step + k, total, f"pass {p.NAME}")

    return PassManager(
        steps,
        deep_verify_each=options.validate_each,
        print_ir_after_all=options.print_ir_after_all,
        print_ir_after=options.print_ir_after,
        print_ir_before=options.print_ir_before,
        print_ir_after_change=options.print_ir_after_change,
        print_fn=options.print_fn,
        on_pass=on_pass,
    )


def _stem(model: Any) -> str:
    if isinstance(model, str | Path):
        return Path(model).stem or "model"
    return "model"


def _print(options: PipelineOptions, text: str) -> None:
    (options.print_fn or sys.stderr.write)(text)
