"""`lower`: the plan level -> a program (instructions, constants, graph bindings).

When the map pass left candidates beside its plan (auto: a duplicated plan,
cimc/backend/plan/duplication.py, and pipelines, cimc/backend/plan/pipeline.py; pipeline:
its other stage counts), every candidate is lowered and the program of the smallest
modelled makespan is kept: the schedule simulation of cimc/machine/schedule.py, as
`cimc report` prices it, of the program after the program passes (program.py `finished`;
they move makespans by several percent, and not alike for every mapping). The plan itself
wins a tie (auto: spread), and a candidate that cannot be lowered is dropped, so auto is
never slower than spread by the cost model's own measure and refuses nothing spread
compiles.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from cimc.backend.builder.compiled import Compiled
from cimc.backend.lower.driver import lower_graph
from cimc.backend.lower.table import LOWERINGS, LoweringTable
from cimc.backend.stages.planned import PlannedGraph
from cimc.backend.stages.planning import planned
from cimc.backend.stages.program import finished
from cimc.errors import CimcError
from cimc.machine.schedule import simulate
from cimc.passes.manager import Pass, PassResult, context, register_pass


@register_pass
@dataclass(frozen=True)
class Lower(Pass):
    """emit every node's instructions, weight prefetches included, into one program."""

    NAME = "lower"
    INPUT: ClassVar[str] = "plan"
    OUTPUT: ClassVar[str] = "program"
    name: str = "model"  # the program is NAME.cimasm, its constants NAME.safetensors
    table: LoweringTable | None = context()  # None: LOWERINGS; decode passes its own

    def apply(self, ir: Any) -> PassResult:
        plan = planned(self, ir)
        if not plan.mapped or plan.values is None or plan.memory is None:
            raise CimcError(
                "lower needs the map, plan-values and plan-memory passes before it", "pipeline"
            )
        candidates = list(plan.pipelines)  # other stage counts, or auto's pipelines
        if plan.duplicated is not None:  # auto: the copies
            candidates.insert(0, replace(plan, stream=plan.duplicated))
        # with GC paused, as every backend pass (PassManager.run); a pipeline whose first
        # stage count cannot be lowered may still have another that can
        error: CimcError | None = None
        try:
            compiled: Compiled | None = self._lower(plan)
        except CimcError as e:
            if plan.pipeline is None or not candidates:
                raise
            compiled, error = None, e
        best = simulate(finished(compiled), plan.arch).makespan if compiled and candidates else 0
        for candidate in candidates:
            try:
                other = self._lower(candidate)
            except CimcError:  # e.g. a copy's rows too wide for its scratchpad: no candidate
                continue
            makespan = simulate(finished(other), plan.arch).makespan
            if compiled is None or makespan < best:
                compiled, best = other, makespan
        if compiled is None:
            assert error is not None
            raise error
        return PassResult(compiled, True)

    def _lower(self, plan: PlannedGraph) -> Compiled:
        assert plan.values is not None and plan.memory is not None
        return lower_graph(
            plan.graph,
            plan.arch,
            plan.values,
            plan.stream,
            plan.reserve,
            self.table or LOWERINGS,
            plan.memory,
            self.name,
            plan.sparsity,
            plan.pipeline,
        )
