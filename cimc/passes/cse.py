"""cse: merge nodes computing the same op on the same operands (identical constants too)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from cimc.ir.graph import Graph
from cimc.ir.ops import Constant, Input
from cimc.passes.manager import GraphPass, register_pass


@register_pass
@dataclass(frozen=True)
class CommonSubexpressionElimination(GraphPass):
    NAME = "cse"
    constants: bool = True  # also merge constants with equal data (hashes every weight once)

    def run(self, graph: Graph) -> bool:
        seen: dict[Hashable, str] = {}
        merged = 0
        for node in graph.nodes():  # topological: operands are already canonical
            if isinstance(node.op, Input):
                continue
            if isinstance(node.op, Constant) and not self.constants:
                continue
            key = (node.op.key(), graph.node(node.name).inputs, node.type)
            first = seen.setdefault(key, node.name)
            if first != node.name:
                graph.replace_all_uses(node.name, first)
                graph.remove_node(node.name)
                merged += 1
        return merged > 0
