"""Local simplifications applied as ops are built: no-ops vanish, chains collapse, and
shape ops on constants are folded, so the graph is in the contract's normal form."""

from __future__ import annotations

import numpy as np

from cimc.importers.torch_builder import Builder, Rewrite, Rule, RuleResult, register
from cimc.ir.op_base import Op, broadcast
from cimc.ir.ops import (
    Add,
    Cast,
    Concat,
    Constant,
    Expand,
    Gather,
    LogicalAnd,
    LogicalNot,
    Mul,
    Reshape,
    Slice,
    Sub,
    Transpose,
    Where,
)

RULES: dict[str, list[Rule]] = {}


def fold(value: np.ndarray) -> Rewrite:
    return Rewrite(Constant(np.ascontiguousarray(value)), ())


@register(RULES, "reshape")
def simplify_reshape(b: Builder, op: Op, inputs: tuple[str, ...]) -> RuleResult:
    assert isinstance(op, Reshape)
    (x,) = inputs
    if b.shape(x) == op.shape:
        return x
    value = b.const(x)
    if value is not None:
        return fold(value.reshape(op.shape))
    inner = b.node(x)
    if isinstance(inner.op, Reshape):
        return Rewrite(op, inner.inputs)
    return None


@register(RULES, "transpose")
def simplify_transpose(b: Builder, op: Op, inputs: tuple[str, ...]) -> RuleResult:
    assert isinstance(op, Transpose)
    (x,) = inputs
    if op.perm == tuple(range(len(op.perm))):
        return x
    value = b.const(x)
    if value is not None:
        return fold(value.transpose(op.perm))
    inner = b.node(x)
    if isinstance(inner.op, Transpose):
        composed = tuple(inner.op.perm[p] for p in op.perm)
        return Rewrite(Transpose(composed), inner.inputs)
    if moves_unit_axes_only(b.shape(x), op.perm):
        return Rewrite(Reshape(tuple(b.shape(x)[p] for p in op.perm)), (x,))
    return None


def moves_unit_axes_only(shape: tuple[int, ...], perm: tuple[int, ...]) -> bool:
    """A permutation that keeps the order of the non-unit axes is a reshape."""
    kept = [p for p in perm if shape[p] != 1]
    return kept == sorted(kept)


@register(RULES, "expand")
def simplify_expand(b: Builder, op: Op, inputs: tuple[str, ...]) -> RuleResult:
    assert isinstance(op, Expand)
    (x,) = inputs
    if b.shape(x) == op.shape:
        return x
    value = b.const(x)
    if value is not None:
        return fold(np.broadcast_to(value, op.shape))
    return None


@register(RULES, "cast")
def simplify_cast(b: Builder, op: Op, inputs: tuple[str, ...]) -> RuleResult:
    assert isinstance(op, Cast)
    (x,) = inputs
    if b.type_of(x).dtype == op.dtype:
        return x
    value = b.const(x)
    if value is not None:
        return fold(value.astype(op.dtype.numpy))
    return None


@register(RULES, "slice")
def simplify_slice(b: Builder, op: Op, inputs: tuple[str, ...]) -> RuleResult:
    assert isinstance(op, Slice)
    (x,) = inputs
    if op.start == 0 and op.stop == b.shape(x)[op.axis] and op.step == 1:
        return x
    value = b.const(x)
    if value is not None:
        index = [slice(None)] * value.ndim
        index[op.axis] = slice(op.start, op.stop, op.step)
        return fold(value[tuple(index)])
    return None


@register(RULES, "gather")
def simplify_gather(b: Builder, op: Op, inputs: tuple[str, ...]) -> RuleResult:
    assert isinstance(op, Gather)
    value = b.const(inputs[0])
    return None if value is None else fold(np.take(value, op.index, axis=op.axis))


@register(RULES, "concat")
def simplify_concat(b: Builder, op: Op, inputs: tuple[str, ...]) -> RuleResult:
    assert isinstance(op, Concat)
    if len(inputs) == 1:
        return inputs[0]
    values = [b.const(i) for i in inputs]
    if all(v is not None for v in values):
        return fold(np.concatenate([v for v in values if v is not None], axis=op.axis))
    return None


def identity_operand(b: Builder, inputs: tuple[str, ...], unit: float, sides: range) -> str | None:
    """The operand left when the other one (at a position in `sides`) is the scalar `unit`
    and does not widen the result by broadcasting. Tables that happen to hold ones (cos at
    position 0) are data, not a spelled-out identity: they stay, so idioms still match."""
    out = broadcast(*(b.shape(i) for i in inputs))
    for k in sides:
        other = inputs[1 - k]
        value = b.const(inputs[k])
        scalar = value is not None and value.size == 1 and b.is_scalar(inputs[k], unit)
        if scalar and b.shape(other) == out:
            return other
    return None


@register(RULES, "mul")
def simplify_mul(b: Builder, op: Op, inputs: tuple[str, ...]) -> RuleResult:
    assert isinstance(op, Mul)
    return identity_operand(b, inputs, 1.0, range(2))


@register(RULES, "add")
def simplify_add(b: Builder, op: Op, inputs: tuple[str, ...]) -> RuleResult:
    assert isinstance(op, Add)
    return identity_operand(b, inputs, 0.0, range(2))


@register(RULES, "sub")
def simplify_sub(b: Builder, op: Op, inputs: tuple[str, ...]) -> RuleResult:
    assert isinstance(op, Sub)
    return identity_operand(b, inputs, 0.0, range(1, 2))


@register(RULES, "logical_and")
def simplify_and(b: Builder, op: Op, inputs: tuple[str, ...]) -> RuleResult:
    """x & all-True is x, broadcast to the result shape."""
    assert isinstance(op, LogicalAnd)
    out = broadcast(*(b.shape(i) for i in inputs))
    for k in range(2):
        if b.is_scalar(inputs[k], True):
            other = inputs[1 - k]
            return other if b.shape(other) == out else Rewrite(Expand(out), (other,))
    return None


@register(RULES, "logical_not")
def simplify_not(b: Builder, op: Op, inputs: tuple[str, ...]) -> RuleResult:
    assert isinstance(op, LogicalNot)
    value = b.const(inputs[0])
    if value is not None:
        return fold(np.logical_not(value))
    inner = b.node(inputs[0])
    return inner.inputs[0] if isinstance(inner.op, LogicalNot) else None


@register(RULES, "where")
def orient_where(b: Builder, op: Op, inputs: tuple[str, ...]) -> RuleResult:
    """where(c, const, x) with a constant c -> where(!c, x, const): masked_fill spells masks
    with the fill first; the normal form (and the attention matcher) has the value first."""
    assert isinstance(op, Where)
    cond, yes, no = inputs
    value = b.const(cond)
    if value is None or b.const(yes) is None or b.const(no) is not None:
        return None
    flipped = b.constant(np.logical_not(value), f"{cond}_not")
    return Rewrite(op, (flipped, no, yes))
