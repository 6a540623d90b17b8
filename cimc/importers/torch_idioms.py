"""Idioms recognized when their last op is built: SiLU, GELU (erf and tanh forms), RMSNorm,
rotary embedding, and linear layers spelled as reshape/matmul/reshape or linear + bias."""

from __future__ import annotations

import math

import numpy as np

from cimc.importers.torch_builder import Builder, Rewrite, Rule, RuleResult, register
from cimc.ir.op_base import Op
from cimc.ir.ops import (
    Add,
    Concat,
    Div,
    Erf,
    Gelu,
    Linear,
    Mul,
    Neg,
    Pow,
    Reciprocal,
    ReduceMean,
    Reshape,
    RmsNorm,
    Rotary,
    Rsqrt,
    Sigmoid,
    Silu,
    Slice,
    Sqrt,
    Tanh,
)

RULES: dict[str, list[Rule]] = {}


def factors(b: Builder, name: str, depth: int = 3) -> list[str]:
    """The operands of a (nested) product, flattened up to `depth` levels of mul."""
    node = b.node(name)
    if depth == 0 or not isinstance(node.op, Mul):
        return [name]
    return [f for i in node.inputs for f in factors(b, i, depth - 1)]


def scalar_of(b: Builder, name: str) -> float | None:
    """The value of a constant whose elements are all equal, else None."""
    value = b.const(name)
    if value is None or value.size == 0 or value.dtype == np.bool_:
        return None
    first = value.flat[0]
    if not bool(np.all(value == first)):
        return None
    return float(str(first)) if value.dtype == np.float32 else float(first)  # f32 1e-6 -> 1e-06


def split_scale(b: Builder, names: list[str]) -> tuple[float, list[str]]:
    """Multiply the scalar constants among `names` together; return it and the rest."""
    scale, rest = 1.0, []
    for n in names:
        s = scalar_of(b, n)
        if s is None:
            rest.append(n)
        else:
            scale *= s
    return scale, rest


def close(a: float, b: float, rel: float = 1e-4) -> bool:
    return math.isclose(a, b, rel_tol=rel)


def other_operand(inputs: tuple[str, ...], name: str) -> str:
    return inputs[1] if inputs[0] == name else inputs[0]


# ---- activations ----------------------------------------------------------------------


@register(RULES, "mul")
def silu(b: Builder, op: Op, inputs: tuple[str, ...]) -> RuleResult:
    """x * sigmoid(x) -> silu(x)."""
    for k in range(2):
        s = b.node(inputs[k])
        if isinstance(s.op, Sigmoid) and s.inputs[0] == inputs[1 - k]:
            return Rewrite(Silu(), (inputs[1 - k],))
    return None


@register(RULES, "mul")
def gelu(b: Builder, op: Op, inputs: tuple[str, ...]) -> RuleResult:
    """0.5 * x * (1 + erf(x / sqrt 2)) or 0.5 * x * (1 + tanh(sqrt(2/pi) (x + c x^3)))."""
    scale, rest = split_scale(b, factors(b, inputs[0]) + factors(b, inputs[1]))
    if len(rest) != 2 or not close(scale, 0.5):
        return None
    for k in range(2):
        x, bracket = rest[k], rest[1 - k]
        kind = gelu_bracket(b, bracket, x)
        if kind is not None:
            return Rewrite(Gelu(approximate=kind), (x,))
    return None


def gelu_bracket(b: Builder, name: str, x: str) -> str | None:
    """'none' / 'tanh' when `name` is 1 + erf(x/sqrt2) / 1 + tanh(...x...), else None."""
    node = b.node(name)
    if not isinstance(node.op, Add):
        return None
    ones = [i for i in node.inputs if scalar_of(b, i) == 1.0]
    if len(ones) != 1:
        return None
    inner = b.node(other_operand(node.inputs, ones[0]))
    if isinstance(inner.op, Erf):
        scale, rest = linear_in(b, inner.inputs[0])
        return "none" if rest == [x] and close(scale, 1 / math.sqrt(2)) else None
    if isinstance(inner.op, Tanh):
        scale, rest = split_scale(b, factors(b, inner.inputs[0]))
        if len(rest) == 1 and close(scale, math.sqrt(2 / math.pi)) and is_cubic(b, rest[0], x):
            return "tanh"
    return None


def linear_in(b: Builder, name: str) -> tuple[float, list[str]]:
    """`name` as scale * product: handles x * c and x / c."""
    node = b.node(name)
    if isinstance(node.op, Div):
        divisor = scalar_of(b, node.inputs[1])
        if divisor:
            scale, rest = linear_in(b, node.inputs[0])
            return scale / divisor, rest
    return split_scale(b, factors(b, name))


def is_cubic(b: Builder, name: str, x: str) -> bool:
    """x + 0.044715 x^3 (either operand order; x^3 as pow(x, 3) or x*x*x)."""
    node = b.node(name)
    if not isinstance(node.op, Add) or x not in node.inputs:
        return False
    scale, rest = split_scale(b, factors(b, other_operand(node.inputs, x)))
    if not close(scale, 0.044715):
        return False
    if rest == [x, x, x]:
        return True
    return len(rest) == 1 and b.node(rest[0]).op == Pow(3.0) and b.node(rest[0]).inputs == (x,)


# ---- RMSNorm --------------------------------------------------------------------------


@register(RULES, "mul")
def rms_norm(b: Builder, op: Op, inputs: tuple[str, ...]) -> RuleResult:
    """gamma * (x * rsqrt(mean(x^2, -1) + eps)) -> rms_norm(x, gamma)."""
    for k in range(2):
        gamma, normed = inputs[k], inputs[1 - k]
        found = rms_normalized(b, normed)
        if found is None or b.const(gamma) is None:
            continue
        x, eps = found
        channels = b.shape(x)[-1]
        value = b.const(gamma)
        if value is None or value.size != channels or b.shape(normed) != b.shape(x):
            continue
        if value.shape != (channels,):
            gamma = b.constant(value.reshape(channels), f"{gamma}_gamma")
        return Rewrite(RmsNorm(eps=eps), (x, gamma))
    return None


def rms_normalized(b: Builder, name: str) -> tuple[str, float] | None:
    """(x, eps) when `name` is x * rsqrt(mean(x^2) + eps) or x / sqrt(mean(x^2) + eps)."""
    node = b.node(name)
    if isinstance(node.op, Div):
        x, denom = node.inputs
        d = b.node(denom)
        return rms_stat(b, d.inputs[0], x) if isinstance(d.op, Sqrt) else None
    if not isinstance(node.op, Mul):
        return None
    for k in range(2):
        x, r = node.inputs[1 - k], b.node(node.inputs[k])
        if isinstance(r.op, Rsqrt):
            found = rms_stat(b, r.inputs[0], x)
        elif isinstance(r.op, Reciprocal) and b.is_op(r.inputs[0], Sqrt):
            found = rms_stat(b, b.node(r.inputs[0]).inputs[0], x)
        else:
            continue
        if found is not None:
            return found
    return None


def rms_stat(b: Builder, name: str, x: str) -> tuple[str, float] | None:
    """(x, eps) when `name` is mean(x^2 over the last axis, keepdim) + eps."""
    node = b.node(name)
    if not isinstance(node.op, Add):
        return None
    for k in range(2):
        eps = scalar_of(b, node.inputs[k])
        mean = b.node(node.inputs[1 - k])
        if eps is None or not isinstance(mean.op, ReduceMean) or not mean.op.keepdim:
            continue
        if mean.op.axes != (b.type_of(x).rank - 1,):
            continue
        sq = b.node(mean.inputs[0])
        squares = sq.op == Pow(2.0) and sq.inputs == (x,)
        if squares or (isinstance(sq.op, Mul) and sq.inputs == (x, x)):
            return x, eps
    return None


# ---- rotary ---------------------------------------------------------------------------


@register(RULES, "add")
def rotary(b: Builder, op: Op, inputs: tuple[str, ...]) -> RuleResult:
    """x * cos + rotate_half(x) * sin -> rotary(x, cos, sin)."""
    for k in range(2):
        found = rotary_terms(b, inputs[k], inputs[1 - k])
        if found is not None:
            x, cos, sin = found
            return Rewrite(Rotary(), (x, table(b, cos, x), table(b, sin, x)))
    return None


def rotary_terms(b: Builder, cos_term: str, sin_term: str) -> tuple[str, str, str] | None:
    first, second = b.node(cos_term), b.node(sin_term)
    if not (isinstance(first.op, Mul) and isinstance(second.op, Mul)):
        return None
    for x, cos in (first.inputs, first.inputs[::-1]):
        for rot, sin in (second.inputs, second.inputs[::-1]):
            if b.const(cos) is None or b.const(sin) is None or b.shape(rot) != b.shape(x):
                continue
            if is_rotate_half(b, rot, x):
                return x, cos, sin
    return None


def is_rotate_half(b: Builder, name: str, x: str) -> bool:
    """cat(-x[..., D/2:], x[..., :D/2]) on the last axis."""
    node = b.node(name)
    rank, dim = b.type_of(x).rank, b.shape(x)[-1]
    if not isinstance(node.op, Concat) or node.op.axis != rank - 1 or len(node.inputs) != 2:
        return False
    neg = b.node(node.inputs[0])
    if not isinstance(neg.op, Neg):
        return False
    half = dim // 2
    return is_slice(b, neg.inputs[0], x, half, dim) and is_slice(b, node.inputs[1], x, 0, half)


def is_slice(b: Builder, name: str, x: str, start: int, stop: int) -> bool:
    node = b.node(name)
    rank = b.type_of(x).rank
    return node.op == Slice(rank - 1, start, stop, 1) and node.inputs == (x,)


def table(b: Builder, name: str, x: str) -> str:
    """A cos/sin table squeezed to its smallest broadcastable shape, e.g. [S, D]."""
    value = b.const(name)
    assert value is not None
    full = np.broadcast_to(value, b.shape(x))
    for axis in range(full.ndim - 2):  # drop the variation-free leading axes ([B, H] for q)
        if np.all(full == full.take([0], axis=axis)):
            full = full.take([0], axis=axis)
    squeezed = full.reshape(full.shape[-2:]) if full.size == np.prod(full.shape[-2:]) else full
    return b.constant(np.ascontiguousarray(squeezed), f"{name}_table")


# ---- linear ---------------------------------------------------------------------------


@register(RULES, "reshape")
def linear_sandwich(b: Builder, op: Op, inputs: tuple[str, ...]) -> RuleResult:
    """reshape(linear(reshape(x, [M, K])), [..., N]) -> linear(reshape(x, [..., K])).

    The 2-D spelling (GPT-2's Conv1D, addmm) becomes a linear on the N-D value; the
    linear keeps its name when nothing else uses its 2-D result.
    """
    assert isinstance(op, Reshape)
    lin = b.node(inputs[0])
    if not isinstance(lin.op, Linear) or not b.is_op(lin.inputs[0], Reshape):
        return None
    flat = b.node(lin.inputs[0])
    assert isinstance(flat.op, Reshape)
    k, n = b.shape(lin.inputs[1])
    if len(flat.op.shape) != 2 or op.shape[-1:] != (n,) or len(op.shape) < 2:
        return None
    shape = (*op.shape[:-1], k)
    x = flat.inputs[0]
    if b.graph.users(lin.name) or b.graph.is_output(lin.name):
        if b.shape(x) != shape:
            x = b.emit(Reshape(shape), (x,), flat.name)
        return Rewrite(lin.op, (x, *lin.inputs[1:]))
    if b.shape(x) == shape:  # rewire the linear in place: it keeps its name
        b.graph.replace_op(lin.name, lin.op, (x, *lin.inputs[1:]))
    elif b.graph.users(flat.name) == [lin.name]:
        b.graph.replace_op(flat.name, Reshape(shape))
        b.graph.replace_op(lin.name, lin.op)
    else:
        x = b.emit(Reshape(shape), (x,), flat.name)
        b.graph.replace_op(lin.name, lin.op, (x, *lin.inputs[1:]))
    return lin.name


@register(RULES, "add")
def linear_bias(b: Builder, op: Op, inputs: tuple[str, ...]) -> RuleResult:
    """linear(x, w) + b[N] -> linear(x, w, b) when the linear has no other use."""
    for k in range(2):
        lin, bias = b.node(inputs[k]), inputs[1 - k]
        value = b.const(bias)
        if not isinstance(lin.op, Linear) or len(lin.inputs) != 2 or value is None:
            continue
        n = b.shape(lin.inputs[1])[1]
        if value.size != n or value.shape[-1:] != (n,) or b.graph.users(lin.name):
            continue
        bias = b.constant(value.reshape(n), f"{bias}_bias") if value.shape != (n,) else bias
        return Rewrite(Linear(), (lin.inputs[0], lin.inputs[1], bias))
    return None
