"""idioms-rotary: HF rotary embedding -> rotary(x, cos, sin).

x * cos + cat(-x[..., D/2:], x[..., :D/2]) * sin      (operands in any order)
"""

from __future__ import annotations

from dataclasses import dataclass

from cimc.ir.graph import Graph, Node
from cimc.ir.ops import Add, Concat, Mul, Neg, Rotary, Slice
from cimc.passes.idioms_match import broadcasts_into, operand_pairs, producer
from cimc.passes.manager import GraphPass, register_pass


@register_pass
@dataclass(frozen=True)
class RotaryIdioms(GraphPass):
    NAME = "idioms-rotary"

    def run(self, graph: Graph) -> bool:
        changed = False
        for node in graph.nodes():
            if node.name in graph and isinstance(node.op, Add):
                changed |= _rotary(graph, node)
        if changed:
            graph.dead_code_elimination()
        return changed


def _rotate_half_of(graph: Graph, name: str) -> str | None:
    """x when `name` is cat(-x[..., D/2:], x[..., :D/2]) on the last axis."""
    cat = producer(graph, name, Concat)
    if cat is None or len(cat.inputs) != 2 or not isinstance(cat.op, Concat):
        return None
    if cat.op.axis != cat.type.rank - 1:
        return None
    neg = producer(graph, cat.inputs[0], Neg)
    second = producer(graph, neg.inputs[0], Slice) if neg else None
    first = producer(graph, cat.inputs[1], Slice)
    if second is None or first is None or first.inputs != second.inputs:
        return None
    assert isinstance(first.op, Slice) and isinstance(second.op, Slice)
    d = graph.node(first.inputs[0]).type.shape[-1]
    last = cat.type.rank - 1
    halves = (
        (first.op.axis, first.op.start, first.op.stop),
        (second.op.axis, second.op.start, second.op.stop),
    )
    if (
        halves != ((last, 0, d // 2), (last, d // 2, d))
        or first.op.step != 1
        or second.op.step != 1
    ):
        return None
    return first.inputs[0]


def _rotary(graph: Graph, add: Node) -> bool:
    for a, b in operand_pairs(add):
        direct, rotated = producer(graph, a, Mul), producer(graph, b, Mul)
        if direct is None or rotated is None:
            continue
        for rot, sin in operand_pairs(rotated):
            x = _rotate_half_of(graph, rot)
            if x is None:
                continue
            for x2, cos in operand_pairs(direct):
                shape = graph.node(x).type.shape
                trig_ok = all(broadcasts_into(graph.node(t).type.shape, shape) for t in (cos, sin))
                if x2 == x and trig_ok and add.type.shape == shape:
                    graph.replace_op(add.name, Rotary(), [x, cos, sin])
                    return True
    return False
