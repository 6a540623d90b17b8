"""The planning passes: `tile`, `map`, `plan-values`, `plan-memory` (a quantized graph -> the
plan level)."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Any, ClassVar, cast

from cimc.backend.builder.footprint import dram_need
from cimc.backend.builder.values import plan_values
from cimc.backend.plan.duplication import check_duplicated, check_mapping
from cimc.backend.plan.from_graph import reserved_macros, workload_from_graph
from cimc.backend.plan.memory import plan_memory
from cimc.backend.plan.micro_batch import split_batch
from cimc.backend.plan.pipeline import plan_stages, stage_counts
from cimc.backend.plan.precision import check_input_bits
from cimc.backend.plan.sparsity import plan_sparsity
from cimc.backend.plan.streaming import (
    POLICIES,
    Policy,
    StreamPlan,
    plan_streaming,
    resident_plan,
)
from cimc.backend.plan.target import Target
from cimc.backend.plan.tiling import tile_workload
from cimc.backend.plan.window import check_window, plan_window
from cimc.backend.stages.planned import PlannedGraph
from cimc.errors import CimcError
from cimc.ir.graph import Graph
from cimc.machine.arch import Arch, load_arch
from cimc.passes.manager import Pass, PassResult, context, register_pass
from cimc.quant.dialect import QLinear


def planned(p: Pass, ir: Any) -> PlannedGraph:
    """The IR as the plan level (the passes after `tile` need it)."""
    if not isinstance(ir, PlannedGraph):
        raise CimcError(f"pass {p.NAME} runs on a plan (after tile), not on {type(ir).__name__}")
    return ir


@register_pass
@dataclass(frozen=True)
class TileWeights(Pass):
    """cut every static-weight matmul of a quantized graph into macro-sized tiles."""

    NAME = "tile"
    INPUT: ClassVar[str] = "graph"
    OUTPUT: ClassVar[str] = "plan"
    arch: str = ""  # preset name or TOML file; `cimc compile --arch` sets `target` instead
    target: Arch | None = context()

    def apply(self, ir: Any) -> PassResult:
        if not isinstance(ir, Graph):
            raise CimcError(f"pass tile runs on a graph, not on {type(ir).__name__}")
        arch = self._arch()
        check_input_bits(ir, arch)
        workload = workload_from_graph(ir)
        tiling = tile_workload(workload, arch.macro.rows, arch.macro.cols)
        return PassResult(PlannedGraph(ir, arch, workload, tiling), True)

    def _arch(self) -> Arch:
        if self.target is not None:
            return self.target
        if not self.arch:
            raise CimcError("tile needs an architecture: tile{arch=PRESET|FILE.toml}", "pipeline")
        return load_arch(self.arch)


@register_pass
@dataclass(frozen=True)
class MapWeights(Pass):
    """place the tiles on (core, macro, window) and plan their streaming phases."""

    NAME = "map"
    INPUT: ClassVar[str] = "plan"
    OUTPUT: ClassVar[str] = "plan"
    policy: str = "auto"  # sequential, double-buffer, pin-what-fits or auto (the fastest)
    mapping: str = "auto"  # spread, duplicate, pipeline or auto (plan/duplication.py)
    stages: int = 0  # pipelines: stages (0: each of plan/pipeline.py's stage_counts)
    micro_batches: int = 0  # pipelines: micro-batches (0: micro_batch.py's default_count)

    def apply(self, ir: Any) -> PassResult:
        plan = planned(self, ir)
        if self.policy not in (*POLICIES, "auto"):
            choices = ", ".join((*POLICIES, "auto"))
            raise CimcError(
                f"unknown streaming policy {self.policy!r}; use one of {choices}", "streaming"
            )
        check_mapping(self.mapping)
        for option, value in (("stages", self.stages), ("micro_batches", self.micro_batches)):
            if value and self.mapping not in ("pipeline", "auto"):
                raise CimcError(
                    f"{option}={value} is for mapping=pipeline (or auto), not {self.mapping}",
                    "map",
                )
        if not any(isinstance(n.op, QLinear) for n in plan.graph.nodes()):
            if self.mapping == "duplicate":
                raise CimcError("mapping=duplicate: the graph has no static-weight layer", "map")
            return PassResult(replace(plan, mapped=True), True)
        reserve = reserved_macros(plan.graph, plan.arch)

        def stream_plan(duplicate: bool) -> StreamPlan:
            return plan_streaming(
                plan.workload,
                Target.from_arch(plan.arch),
                cast(Policy, self.policy),
                reserve_per_core=reserve,
                cold=True,
                tiling=plan.tiling,
                duplicate=duplicate,
            )

        stream = stream_plan(self.mapping == "duplicate")
        if self.mapping == "duplicate":
            check_duplicated(stream, plan.arch.name)
        mapped = replace(plan, mapped=True, stream=stream, reserve=reserve)
        if self.mapping == "pipeline":
            first, *rest = self._pipelines(mapped)
            return PassResult(replace(first, pipelines=tuple(rest)), True)
        if self.mapping == "auto" and not stream.streamed:  # copies need resident weights
            duplicated = stream_plan(True)
            mapped = replace(mapped, duplicated=duplicated if duplicated.copies else None)
            with suppress(CimcError):  # a pipeline when there is a batch no op mixes
                mapped = replace(mapped, pipelines=self._pipelines(mapped))
        return PassResult(mapped, True)

    def _pipelines(self, plan: PlannedGraph) -> tuple[PlannedGraph, ...]:
        """`plan` (spread, mapped) as pipelines (cimc/backend/plan/pipeline.py): with
        `stages` stages, else with each of `stage_counts` that plans; a one-line reason
        when none does."""
        assert plan.stream is not None
        if plan.stream.streamed:
            raise CimcError(
                f"mapping=pipeline needs every weight resident, but they stream through the "
                f"macros in {len(plan.stream.phases)} phases on '{plan.arch.name}'; use "
                "--mapping spread or a larger arch",
                "map",
            )
        micro = split_batch(plan.graph, self.micro_batches or None)
        target = Target.from_arch(plan.arch)
        counts = [self.stages] if self.stages else stage_counts(target, micro.count)
        plans, errors = [], []
        for count in counts:
            try:
                pipeline, placement = plan_stages(
                    plan.graph, plan.workload, plan.tiling, target, plan.reserve, micro, count
                )
            except CimcError as e:
                errors.append(e)
                continue
            stream = resident_plan(plan.workload, target, placement)
            plans.append(replace(plan, stream=stream, pipeline=pipeline))
        if not plans:
            raise errors[0]
        return tuple(plans)


@register_pass
@dataclass(frozen=True)
class PlanValues(Pass):
    """place every graph value: declarations, and activation pools in gb then DRAM."""

    NAME = "plan-values"
    INPUT: ClassVar[str] = "plan"
    OUTPUT: ClassVar[str] = "plan"

    def apply(self, ir: Any) -> PassResult:
        return PassResult(self._values(planned(self, ir)), True)

    def _values(self, plan: PlannedGraph) -> PlannedGraph:
        stages = plan.pipeline.stage_of() if plan.pipeline is not None else None
        micro = plan.pipeline.micro if plan.pipeline is not None else None
        values = plan_values(plan.graph, plan.arch, stages=stages, micro=micro)
        return replace(plan, values=values, pipelines=tuple(map(self._values, plan.pipelines)))


@register_pass
@dataclass(frozen=True)
class PlanMemory(Pass):
    """keep the weight image in DRAM, or split it between DRAM and flash when it does not
    fit memory.dram_bytes (cimc/backend/plan/memory.py)."""

    NAME = "plan-memory"
    INPUT: ClassVar[str] = "plan"
    OUTPUT: ClassVar[str] = "plan"
    # DRAM kept for other data, at least: programs sharing one weight image (prefill and
    # decode) are planned with the larger need of the two, so they store it alike
    reserve: int = context(0)

    def apply(self, ir: Any) -> PassResult:
        return PassResult(self._memory(planned(self, ir)), True)

    def _memory(self, plan: PlannedGraph) -> PlannedGraph:
        if not plan.mapped or plan.values is None:
            raise CimcError("plan-memory needs the map and plan-values passes before it")
        need = dram_need(plan.graph, plan.values)
        other = max(need.other, self.reserve)
        memory = plan_memory(plan.stream, plan.arch, other, need.tables)
        pipelines = tuple(map(self._memory, plan.pipelines))
        return replace(plan, memory=memory, pipelines=pipelines)


@register_pass
@dataclass(frozen=True)
class PlanSparsity(Pass):
    """pick the linear layers that load only the weight rows of their non-zero inputs
    (mode exact: after ReLU-like activations; cimc/backend/plan/sparsity.py)."""

    NAME = "plan-sparsity"
    INPUT: ClassVar[str] = "plan"
    OUTPUT: ClassVar[str] = "plan"
    mode: str = "none"  # none or exact
    window: int | None = None  # --window K: flash rows through a DRAM cache (plan/window.py)

    def apply(self, ir: Any) -> PassResult:
        plan = planned(self, ir)
        if not plan.mapped or plan.memory is None:
            raise CimcError("plan-sparsity needs the map and plan-memory passes before it")
        check_window(self.window, self.mode)
        sparsity = plan_sparsity(plan.graph, self.mode, plan.stream, plan.memory)
        memory = plan.memory
        if self.window is not None and plan.stream is not None and plan.values is not None:
            tables = dram_need(plan.graph, plan.values).tables
            sparsity = replace(sparsity, window=self.window)
            sparsity, memory = plan_window(
                plan.graph, sparsity, plan.stream, memory, plan.arch, tables
            )
        duplicated = plan.duplicated
        own = sparsity.own_loads
        copied = [layer for layer in own if plan.stream and layer in plan.stream.copies]
        if copied:  # a sparse or predicted layer loads its rows itself, into copy 0's macros
            raise CimcError(
                f"mapping=duplicate copies %{copied[0]}, which --sparsity {sparsity.mode} loads "
                f"by its active rows; use --mapping spread (or auto) with --sparsity "
                f"{sparsity.mode}",
                "plan-sparsity",
            )
        if own and plan.pipeline is not None:  # each micro-batch would load its own rows
            raise CimcError(
                f"mapping=pipeline keeps every weight resident, but --sparsity "
                f"{sparsity.mode} loads rows by the active inputs; use --mapping spread "
                "(or auto)",
                "plan-sparsity",
            )
        if duplicated is not None and set(own) & set(duplicated.copies):
            duplicated = None  # auto: the sparse layers keep the spread plan
        pipelines = plan.pipelines if not own else ()
        changed = replace(
            plan, sparsity=sparsity, memory=memory, duplicated=duplicated, pipelines=pipelines
        )
        return PassResult(changed, bool(own))
