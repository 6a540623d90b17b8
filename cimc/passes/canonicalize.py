"""canonicalize: simplify, fold-constants, shrink-constants, cse and dce repeated until nothing
changes."""

from __future__ import annotations

from dataclasses import dataclass

from cimc.ir.graph import Graph
from cimc.passes.cse import CommonSubexpressionElimination
from cimc.passes.dce import DeadCodeElimination
from cimc.passes.fold_constants import FoldConstants
from cimc.passes.manager import GraphPass, register_pass
from cimc.passes.shrink_constants import ShrinkConstants
from cimc.passes.simplify import Simplify


@register_pass
@dataclass(frozen=True)
class Canonicalize(GraphPass):
    NAME = "canonicalize"
    max_iterations: int = 8
    fold_max_elements: int = 1 << 16

    def run(self, graph: Graph) -> bool:
        passes: list[GraphPass] = [
            Simplify(),
            FoldConstants(self.fold_max_elements),
            ShrinkConstants(),
            CommonSubexpressionElimination(),
            DeadCodeElimination(),
        ]
        changed = False
        for _ in range(self.max_iterations):
            step = False
            for p in passes:
                step |= p.run(graph)
            changed |= step
            if not step:
                break
        return changed
