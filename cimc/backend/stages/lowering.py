"""`lower`: the plan level -> a program (instructions, constants, graph bindings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from cimc.backend.lower.driver import lower_graph
from cimc.backend.lower.table import LOWERINGS, LoweringTable
from cimc.backend.stages.planning import planned
from cimc.errors import CimcError
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
        compiled = lower_graph(  # with GC paused, as every backend pass (PassManager.run)
            plan.graph,
            plan.arch,
            plan.values,
            plan.stream,
            plan.reserve,
            self.table or LOWERINGS,
            plan.memory,
            self.name,
            plan.sparsity,
        )
        return PassResult(compiled, True)
