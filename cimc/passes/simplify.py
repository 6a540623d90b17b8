"""simplify: remove no-op ops, collapse chains, and orient ops the way idioms expect.

Patterns (each keeps the value bit for bit):
- reshape to the operand's shape, transpose by the identity, cast to the same dtype,
  expand to the same shape, slice over a whole axis with step 1, concat of one operand
  ->  the operand;
- x * 1, x / 1, x - 0, x + (-0.0), integer x + 0, x or false, x and true -> x, when the
  constant is uniform and does not broadcast x to a larger shape; x and true that does
  broadcast x -> expand(x); not(not(x)) -> x;
- reshape(reshape(x)) -> reshape(x); transpose(transpose(x)) -> one transpose (or x);
  expand(expand(x)) -> expand(x); a transpose moving only unit axes -> reshape;
- where(c, const, x) with a constant c -> where(not c, x, const): masked_fill puts the
  fill first, the attention idiom wants the value first;
- where(c, a, b) with c all true (all false) -> a (b), when it has the result's shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cimc.ir.graph import Graph, Node
from cimc.ir.op_base import Op
from cimc.ir.ops import (
    Add,
    Cast,
    Concat,
    Constant,
    Div,
    Expand,
    LogicalAnd,
    LogicalNot,
    LogicalOr,
    Mul,
    Reshape,
    Slice,
    Sub,
    Transpose,
    Where,
)
from cimc.passes.manager import register_pass
from cimc.passes.patterns import NoMatch, Pattern, PatternPass, apply_patterns


def forwarded_operand(graph: Graph, node: Node) -> str | None:
    """The operand this node merely passes through, if any."""
    op = node.op
    if isinstance(op, Concat):
        return node.inputs[0] if len(node.inputs) == 1 else None
    if isinstance(op, Reshape | Transpose | Cast | Expand | Slice):
        x = graph.node(node.inputs[0]).type
        if isinstance(op, Transpose):
            noop = op.perm == tuple(range(x.rank))
        elif isinstance(op, Slice):
            noop = op.start == 0 and op.stop == x.shape[op.axis] and op.step == 1
        else:
            noop = x == node.type  # reshape / cast / expand that change nothing
        return node.inputs[0] if noop else None
    if isinstance(op, Where):
        return _decided_where(graph, node)
    return _binary_identity(graph, node)


def _decided_where(graph: Graph, node: Node) -> str | None:
    """where(c, a, b) with a constant c that is all true (all false): a (b), when that
    operand already has the result's shape (ONNX Attention's guard of fully masked rows,
    where no row is fully masked)."""
    value = graph.constant_value(node.inputs[0])
    if value is None or value.size == 0 or not (value.all() or not value.any()):
        return None
    kept = node.inputs[1] if value.all() else node.inputs[2]
    return kept if graph.node(kept).type == node.type else None


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


def _remove_if_unused(graph: Graph, name: str) -> None:
    if not graph.users(name) and not graph.is_output(name):
        graph.remove_node(name)


def _match_forward(graph: Graph, node: Node) -> str | NoMatch:
    same = forwarded_operand(graph, node)
    return NoMatch(f"this {node.op.NAME} changes its operand") if same is None else same


def _forward(graph: Graph, node: Node, same: str) -> None:
    graph.replace_all_uses(node.name, same)
    graph.remove_node(node.name)


def _match_merge(graph: Graph, node: Node) -> tuple[Op, tuple[str, ...]] | NoMatch:
    merged = merged_chain(graph, node)
    return NoMatch(f"the operand is not a {node.op.NAME}") if merged is None else merged


def _merge(graph: Graph, node: Node, merged: tuple[Op, tuple[str, ...]]) -> None:
    graph.replace_op(node.name, merged[0], inputs=merged[1])
    _remove_if_unused(graph, node.inputs[0])


def _match_unit_transpose(graph: Graph, node: Node) -> Reshape | NoMatch:
    assert isinstance(node.op, Transpose)
    if not node.op.moves_unit_axes_only(graph.node(node.inputs[0]).type.shape):
        return NoMatch("the transpose reorders axes longer than 1")
    return Reshape(node.type.shape)


def _to_reshape(graph: Graph, node: Node, reshape: Reshape) -> None:
    graph.replace_op(node.name, reshape)


def _match_and_true(graph: Graph, node: Node) -> str | NoMatch:
    """x when the other operand is all true (the and only broadcasts x)."""
    for x, c in (node.inputs, node.inputs[::-1]):
        value = graph.constant_value(c)
        if value is not None and value.size > 0 and bool(value.all()):
            return x
    return NoMatch("neither operand is an all-true constant")


def _to_expand(graph: Graph, node: Node, x: str) -> None:
    graph.replace_op(node.name, Expand(node.type.shape), [x])


def _match_not_not(graph: Graph, node: Node) -> str | NoMatch:
    inner = graph.node(node.inputs[0])
    if not isinstance(inner.op, LogicalNot):
        return NoMatch("the operand is not a logical_not")
    return inner.inputs[0]


def _forward_not_not(graph: Graph, node: Node, x: str) -> None:
    inner = node.inputs[0]
    _forward(graph, node, x)
    _remove_if_unused(graph, inner)


def _match_orient_where(graph: Graph, node: Node) -> np.ndarray | NoMatch:
    """The negated condition of where(c, const, x) with a constant c."""
    cond, yes, no = node.inputs
    value = graph.constant_value(cond)
    if value is None or graph.constant_value(yes) is None or graph.constant_value(no) is not None:
        return NoMatch("not where(constant condition, constant, run-time value)")
    return np.logical_not(value)


def _orient_where(graph: Graph, node: Node, negated: np.ndarray) -> None:
    cond, yes, no = node.inputs
    flipped = graph.add_constant(negated, f"{cond}_not", node.loc)
    graph.replace_op(node.name, node.op, [flipped, no, yes])


_FORWARDING = (Reshape, Transpose, Cast, Expand, Slice, Concat, Where, *_IDENTITIES)
SIMPLIFY: tuple[Pattern[Any], ...] = (
    Pattern("no-op", _FORWARDING, _match_forward, _forward),
    Pattern("merge-chain", (Reshape, Transpose, Expand), _match_merge, _merge),
    Pattern("unit-transpose", Transpose, _match_unit_transpose, _to_reshape),
    Pattern("and-true", LogicalAnd, _match_and_true, _to_expand),
    Pattern("not-not", LogicalNot, _match_not_not, _forward_not_not),
    Pattern("orient-where", Where, _match_orient_where, _orient_where),
)
"""In the order the driver tries them at a node."""


@register_pass
@dataclass(frozen=True)
class Simplify(PatternPass):
    NAME = "simplify"
    PATTERNS = SIMPLIFY
    max_iterations: int = 16

    def run(self, graph: Graph) -> bool:
        # The nodes a rewrite leaves unused stay for dce, as they always did: removing them
        # here would change which of two equal nodes cse keeps, and so the names.
        return apply_patterns(graph, self.PATTERNS, self.max_iterations, dce=False)
