"""dce: remove nodes no graph output depends on (graph inputs always stay)."""

from __future__ import annotations

from dataclasses import dataclass

from cimc.ir.graph import Graph
from cimc.passes.manager import GraphPass, register_pass


@register_pass
@dataclass(frozen=True)
class DeadCodeElimination(GraphPass):
    NAME = "dce"

    def run(self, graph: Graph) -> bool:
        return graph.dead_code_elimination() > 0
