"""simplify: remove no-op reshape/transpose/cast/expand/slice and collapse identity chains.

Rules (each keeps the value bit for bit):
- reshape to the operand's shape, transpose by the identity, cast to the same dtype,
  expand to the same shape, slice over a whole axis with step 1  ->  the operand;
- reshape(reshape(x)) -> reshape(x); transpose(transpose(x)) -> one transpose (or x);
  expand(expand(x)) -> expand(x);
- x * 1, x / 1, x - 0, x + (-0.0), integer x + 0, x or false, x and true -> x, when the
  constant is uniform and does not broadcast x to a larger shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cimc.ir.graph import Graph, Node
from cimc.ir.op_base import Op
from cimc.ir.ops import (
    Add,
    Cast,
    Constant,
    Div,
    Expand,
    LogicalAnd,
    LogicalOr,
    Mul,
    Reshape,
    Slice,
    Sub,
    Transpose,
)
from cimc.passes.manager import GraphPass, register_pass


@register_pass
@dataclass(frozen=True)
class Simplify(GraphPass):
    NAME = "simplify"
    max_iterations: int = 16

    def run(self, graph: Graph) -> bool:
        changed = False
        for _ in range(self.max_iterations):
            step = False
            for name in graph.order():
                if name in graph:
                    step |= _simplify_node(graph, graph.node(name))
            changed |= step
            if not step:
                break
        return changed


def _simplify_node(graph: Graph, node: Node) -> bool:
    same = forwarded_operand(graph, node)
    if same is not None:
        graph.replace_all_uses(node.name, same)
        graph.remove_node(node.name)
        return True
    merged = merged_chain(graph, node)
    if merged is None:
        return False
    inner = node.inputs[0]
    graph.replace_op(node.name, merged[0], inputs=merged[1])
    if not graph.users(inner) and not graph.is_output(inner):
        graph.remove_node(inner)
    return True


def forwarded_operand(graph: Graph, node: Node) -> str | None:
    """The operand this node merely passes through, if any."""
    op = node.op
    if isinstance(op, Reshape | Transpose | Cast | Expand | Slice):
        x = graph.node(node.inputs[0]).type
        if isinstance(op, Transpose):
            noop = op.perm == tuple(range(x.rank))
        elif isinstance(op, Slice):
            noop = op.start == 0 and op.stop == x.shape[op.axis] and op.step == 1
        else:
            noop = x == node.type  # reshape / cast / expand that change nothing
        return node.inputs[0] if noop else None
    return _binary_identity(graph, node)


def _binary_identity(graph: Graph, node: Node) -> str | None:
    rule = _IDENTITIES.get(type(node.op))
    if rule is None:
        return None
    positions, neutral = rule
    for k in positions:
        x, c = node.inputs[k], node.inputs[1 - k]
        const = graph.node(c).op
        if (
            graph.node(x).type == node.type
            and isinstance(const, Constant)
            and _is_neutral(const.value, neutral)
        ):
            return x
    return None


def _is_neutral(value: np.ndarray, neutral: str) -> bool:
    if value.size == 0:
        return False
    flat = value.reshape(-1)
    if neutral == "zero":
        return bool((flat == 0).all()) if value.dtype.kind in "iu" else _all_neg_zero(flat)
    if neutral == "sub_zero":
        return bool((flat == 0).all() and not np.signbit(flat).any())
    target = {"one": 1, "false": False, "true": True}[neutral]
    return bool((flat == target).all())


def _all_neg_zero(flat: np.ndarray) -> bool:
    # x + (+0.0) turns -0.0 into +0.0; only x + (-0.0) is exact for every float x.
    return bool(flat.dtype.kind == "f" and (flat == 0).all() and np.signbit(flat).all())


# op -> (positions where x may stand, which constant is neutral)
_IDENTITIES: dict[type[Op], tuple[tuple[int, ...], str]] = {
    Mul: ((0, 1), "one"),
    Div: ((0,), "one"),
    Add: ((0, 1), "zero"),
    Sub: ((0,), "sub_zero"),
    LogicalOr: ((0, 1), "false"),
    LogicalAnd: ((0, 1), "true"),
}


def merged_chain(graph: Graph, node: Node) -> tuple[Op, tuple[str, ...]] | None:
    """One op (and its operands) replacing reshape/transpose/expand applied to its own kind."""
    op = node.op
    if not isinstance(op, Reshape | Transpose | Expand):
        return None
    inner = graph.node(node.inputs[0])
    if type(inner.op) is not type(op):
        return None
    if isinstance(op, Transpose):
        assert isinstance(inner.op, Transpose)
        return Transpose(tuple(inner.op.perm[p] for p in op.perm)), inner.inputs
    return op, inner.inputs  # the outer reshape/expand alone gives the same result
