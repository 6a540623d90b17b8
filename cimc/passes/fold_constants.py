"""fold-constants: evaluate nodes whose operands are all constants with the float kernels.

A folded node becomes a `constant` in place (same name, same location), so names stay
stable. Folding never creates a constant larger than both `max_elements` and its largest
operand: a weight transpose folds, a scalar expanded to a [B, H, S, S] mask does not.
"""

from __future__ import annotations

from dataclasses import dataclass

from cimc.errors import CimcError
from cimc.ir.graph import Graph, Node
from cimc.ir.ops import Constant, Input
from cimc.passes.manager import GraphPass, register_pass
from cimc.reference.float_model import evaluate_op, has_kernel


@register_pass
@dataclass(frozen=True)
class FoldConstants(GraphPass):
    NAME = "fold-constants"
    max_elements: int = 1 << 16

    def run(self, graph: Graph) -> bool:
        folded: list[Node] = []
        for node in graph.nodes():
            if self.foldable(graph, node):
                self._fold(graph, node)
                folded.append(node)
        self._drop_orphans(graph, folded)
        return bool(folded)

    def foldable(self, graph: Graph, node: Node) -> bool:
        """All operands are constants, a kernel exists, and the result is not too big."""
        if isinstance(node.op, Input | Constant) or not node.inputs or not has_kernel(node.op):
            return False
        operands = [graph.node(i) for i in node.inputs]
        if not all(isinstance(o.op, Constant) for o in operands):
            return False
        largest = max(o.type.numel for o in operands)
        return node.type.numel <= max(self.max_elements, largest)

    def _fold(self, graph: Graph, node: Node) -> None:
        operands = [graph.constant_value(i) for i in node.inputs]
        value = evaluate_op(node.op, [v for v in operands if v is not None], node.where)
        graph.replace_op(node.name, Constant(value), inputs=())
        if graph.node(node.name).type != node.type:
            got = graph.node(node.name).type
            raise CimcError(f"folding {node.op.NAME} gave {got}, expected {node.type}", node.where)

    @staticmethod
    def _drop_orphans(graph: Graph, folded: list[Node]) -> None:
        """Remove the constants that only fed folded nodes (others are left to dce)."""
        candidates = sorted({i for n in folded for i in n.inputs})
        for name in candidates:
            if (
                name in graph
                and isinstance(graph.node(name).op, Constant)
                and not graph.users(name)
                and not graph.is_output(name)
            ):
                graph.remove_node(name)
