"""One lowering rule per canonical op: float node -> q-op with its plan (see quantize.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from cimc.errors import CimcError
from cimc.ir import ops
from cimc.ir.graph import Graph, Node
from cimc.ir.op_base import Op
from cimc.quant import constants as qc
from cimc.quant import plans
from cimc.quant.calibrate import Calibration
from cimc.quant.dialect import (
    QAdd,
    QAttention,
    QConstant,
    QEmbedding,
    QLayerNorm,
    QLinear,
    QLut,
    QMatMul,
    QMul,
    QRampLut,
    QReduce,
    QRequant,
    QRmsNorm,
    QRotary,
    QSoftmax,
)
from cimc.quant.options import QuantOptions


@dataclass(frozen=True)
class QValue:
    """A value of the quantized graph: its name, and scale/bits when it holds codes."""

    name: str
    scale: float | None = None
    bits: int | None = None

    @property
    def is_codes(self) -> bool:
        return self.scale is not None


class Lowering(Protocol):
    """What a rule sees of the quantization in progress (cimc/quant/quantize.py)."""

    src: Graph  # the float graph
    out: Graph  # the quantized graph being built
    calib: Calibration
    options: QuantOptions

    def value(self, name: str) -> QValue: ...
    def codes(self, name: str, bits: int | None = None, scale: float | None = None) -> QValue: ...
    def scale_of(self, name: str, bits: int) -> float: ...
    def out_bits(self, node: Node) -> int: ...
    def emit(self, node: Node, op: Op, operands: Sequence[str]) -> str: ...
    def helper_name(self, base: str) -> str: ...


Rule = Callable[[Lowering, Node], QValue]

# Canonical ops that stay as they are when no operand and no result is float (mask logic,
# position ids, lookups in integer tables).
INTEGER_PASSTHROUGH: tuple[type[Op], ...] = (
    ops.Add,
    ops.Sub,
    ops.Mul,
    ops.Maximum,
    ops.Minimum,
    ops.CumSum,
    ops.Embedding,
    ops.Cast,
    ops.Equal,
    ops.Less,
    ops.Greater,
    ops.LogicalNot,
    ops.LogicalAnd,
    ops.LogicalOr,
    ops.Where,
)

LUT_FUNCTIONS: dict[type[Op], str] = {
    ops.Silu: "silu",
    ops.Relu: "relu",
    ops.Tanh: "tanh",
    ops.Sigmoid: "sigmoid",
    ops.Erf: "erf",
    ops.Exp: "exp",
    ops.Neg: "neg",
    ops.Abs: "abs",
}


def lower_node(lw: Lowering, node: Node) -> QValue:
    """The q-op of one canonical node, or a CimcError naming the op and its location."""
    floats = node.type.dtype.is_float or any(
        lw.src.node(i).type.dtype.is_float for i in node.inputs
    )
    if not floats and isinstance(node.op, INTEGER_PASSTHROUGH):
        return QValue(lw.emit(node, node.op, [lw.value(i).name for i in node.inputs]))
    rule = RULES.get(type(node.op))
    if rule is None:
        raise CimcError(
            f"no integer recipe for op {node.op.NAME} on {node.type.dtype} values; "
            "rewrite the model without it or ask for a recipe",
            node.where,
        )
    return rule(lw, node)


def _out(lw: Lowering, node: Node) -> tuple[int, float]:
    bits = lw.out_bits(node)
    return bits, lw.scale_of(node.name, bits)


def _const(lw: Lowering, node: Node, k: int, what: str) -> np.ndarray:
    return np.asarray(_stored(lw, node, k, what), np.float64)


def _stored(lw: Lowering, node: Node, k: int, what: str) -> np.ndarray:
    """A constant operand as stored (weights and tables: possibly a view of the model
    file; the plans convert them a block at a time)."""
    operand = lw.src.node(node.inputs[k])
    if not isinstance(operand.op, ops.Constant):
        raise CimcError(f"{node.op.NAME} needs a constant {what} to be quantized", node.where)
    return operand.op.value


def _scale(v: QValue) -> float:
    assert v.scale is not None
    return v.scale


def linear(lw: Lowering, node: Node) -> QValue:
    x = lw.codes(node.inputs[0], 8)
    w = _stored(lw, node, 1, "weight")
    b = _const(lw, node, 2, "bias") if len(node.inputs) == 3 else None
    bits, scale = _out(lw, node)
    weights = lw.options.weights
    plan = plans.plan_linear(
        w,
        b,
        _scale(x),
        scale,
        bits,
        node.where,
        weight_bits=weights.bits_of(node.name),
        group_size=weights.group_of(node.name),
    )
    return QValue(lw.emit(node, QLinear(scale=scale, bits=bits, plan=plan), [x.name]), scale, bits)


def matmul(lw: Lowering, node: Node) -> QValue:
    a, b = lw.codes(node.inputs[0], 8), lw.codes(node.inputs[1], 8)
    bits, scale = _out(lw, node)
    k = lw.src.node(node.inputs[0]).type.shape[-1]
    plan = plans.plan_matmul(_scale(a), _scale(b), scale, bits, k, loc=node.where)
    op = QMatMul(scale=scale, bits=bits, plan=plan)
    return QValue(lw.emit(node, op, [a.name, b.name]), scale, bits)


def add(lw: Lowering, node: Node) -> QValue:
    a, b = lw.codes(node.inputs[0]), lw.codes(node.inputs[1])
    bits, scale = _out(lw, node)
    sub = isinstance(node.op, ops.Sub)
    plan = plans.plan_add(_scale(a), _scale(b), scale, bits, sub, node.where)
    return QValue(
        lw.emit(node, QAdd(scale=scale, bits=bits, plan=plan), [a.name, b.name]), scale, bits
    )


def mul(lw: Lowering, node: Node) -> QValue:
    scaled = scale_by_constant(lw, node) if isinstance(node.op, ops.Mul) else None
    if scaled is not None:
        return scaled
    a = lw.codes(node.inputs[0])
    if isinstance(node.op, ops.Div):
        divisor = _const(lw, node, 1, "divisor (division by run-time values has no recipe)")
        if np.any(divisor == 0):
            raise CimcError("division by a constant that contains zeros", node.where)
        b = constant(lw, node, 1.0 / divisor, a.bits or 8)
    else:
        b = lw.codes(node.inputs[1])
    bits, scale = _out(lw, node)
    plan = plans.plan_mul(_scale(a), _scale(b), scale, bits, node.where)
    return QValue(
        lw.emit(node, QMul(scale=scale, bits=bits, plan=plan), [a.name, b.name]), scale, bits
    )


def scale_by_constant(lw: Lowering, node: Node) -> QValue | None:
    """x * c with c a positive constant per channel (last axis) or scalar: one REQ per
    channel, whose multipliers carry c exactly (no quantized copy of c, no product).
    None when the mul is not of that form (then it is an ordinary q.mul)."""
    shape = node.type.shape
    for k in (0, 1):
        operand = lw.src.node(node.inputs[1 - k])
        if (
            not isinstance(operand.op, ops.Constant)
            or lw.src.node(node.inputs[k]).type.shape != shape
        ):
            continue
        c = np.asarray(operand.op.value, np.float64)
        per_channel = c.size > 1 and shape and c.shape[-1:] == shape[-1:] and c.size == shape[-1]
        if (c.size == 1 or per_channel) and np.all(c > 0):
            x = lw.codes(node.inputs[k])
            bits, scale = _out(lw, node)
            ratios = _scale(x) * c.ravel() / scale
            rq = (
                qc.requant_per_channel(ratios, bits, node.where)
                if per_channel
                else qc.requant_per_tensor(float(ratios[0]), bits, node.where)
            )
            op = QRequant(scale=scale, bits=bits, plan=rq)
            return QValue(lw.emit(node, op, [x.name]), scale, bits)
    return None


def constant(lw: Lowering, node: Node, value: np.ndarray, bits: int) -> QValue:
    """A q.constant computed at compile time for `node` (e.g. the reciprocal of a divisor)."""
    scale = qc.activation_scale(float(np.abs(value).max(initial=0.0)), bits, node.where)
    op = QConstant(scale=scale, bits=bits, value=np.asarray(qc.quantize_tensor(value, scale, bits)))
    return QValue(
        lw.out.add_node(op, [], lw.helper_name(f"{node.name}_const"), node.loc), scale, bits
    )


def unary(lw: Lowering, node: Node) -> QValue:
    """LUT8 of an int8 input (an int16 value is requantized first)."""
    fn: str | Callable[[float], float]
    if isinstance(node.op, ops.Clip):
        fn = _clip(node.op.lo, node.op.hi)  # exact in float64: a compare, no rounding
    else:
        fn = LUT_FUNCTIONS[type(node.op)]
    x = lw.codes(node.inputs[0], 8)
    bits, scale = _out(lw, node)
    plan = plans.plan_unary(fn, _scale(x), scale, bits, node.where)
    name = fn if isinstance(fn, str) else node.op.NAME
    return QValue(
        lw.emit(node, QLut(scale=scale, bits=bits, fn=name, plan=plan), [x.name]), scale, bits
    )


def _clip(lo: float, hi: float) -> Callable[[float], float]:
    return lambda v: min(max(v, lo), hi)


def activation(lw: Lowering, node: Node) -> QValue:
    """GELU / SiLU: ramp + table of an int16 input (as scales.py widens it), else LUT8."""
    if isinstance(node.op, ops.Gelu):
        fn = "gelu_tanh" if node.op.approximate == "tanh" else "gelu"
    else:
        fn = LUT_FUNCTIONS[type(node.op)]
    bits, scale = _out(lw, node)
    x = lw.codes(node.inputs[0])
    op: Op
    if x.bits == 16 and fn in plans.RAMP_SPAN:
        ramp = plans.plan_ramp_unary(fn, _scale(x), scale, bits, node.where)
        op = QRampLut(scale=scale, bits=bits, fn=fn, plan=ramp)
    else:
        x = lw.codes(node.inputs[0], 8)
        plan = plans.plan_unary(fn, _scale(x), scale, bits, node.where)
        op = QLut(scale=scale, bits=bits, fn=fn, plan=plan)
    return QValue(lw.emit(node, op, [x.name]), scale, bits)


REDUCE_KINDS: dict[type[Op], str] = {
    ops.ReduceSum: "sum",
    ops.ReduceMean: "mean",
    ops.ReduceMax: "max",
}


def reduce(lw: Lowering, node: Node) -> QValue:
    assert isinstance(node.op, ops.ReduceSum | ops.ReduceMean | ops.ReduceMax)
    x = lw.codes(node.inputs[0])
    shape = lw.src.node(node.inputs[0]).type.shape
    n = int(np.prod([shape[a] for a in node.op.axes], dtype=np.int64))
    bits, scale = _out(lw, node)
    kind = REDUCE_KINDS[type(node.op)]
    plan = plans.plan_reduce(kind, n, _scale(x), scale, bits, node.where)
    op = QReduce(scale=scale, bits=bits, axes=node.op.axes, keepdim=node.op.keepdim, plan=plan)
    return QValue(lw.emit(node, op, [x.name]), scale, bits)


def embedding(lw: Lowering, node: Node) -> QValue:
    ids = lw.value(node.inputs[0])
    table = _stored(lw, node, 1, "table")
    bits = lw.out_bits(node)
    # The whole table is known: cover it, not only the rows calibration happened to use.
    scale = qc.activation_scale(qc.abs_max(table), bits, node.where)
    plan = plans.plan_embedding(table, scale, bits, node.where)
    return QValue(
        lw.emit(node, QEmbedding(scale=scale, bits=bits, plan=plan), [ids.name]), scale, bits
    )


def rotary(lw: Lowering, node: Node) -> QValue:
    x = lw.codes(node.inputs[0])
    cos, sin = _const(lw, node, 1, "cos table"), _const(lw, node, 2, "sin table")
    bits, scale = _out(lw, node)
    plan = plans.plan_rotary(cos, sin, _scale(x), scale, bits, node.where)
    return QValue(lw.emit(node, QRotary(scale=scale, bits=bits, plan=plan), [x.name]), scale, bits)


def softmax(lw: Lowering, node: Node) -> QValue:
    assert isinstance(node.op, ops.Softmax)
    if node.op.axis != node.type.rank - 1:
        raise CimcError("the integer softmax works on the last axis only", node.where)
    x = lw.codes(node.inputs[0])
    bits = lw.out_bits(node)
    out_max = qc.qmax(bits)
    plan = plans.plan_softmax(_scale(x), out_max, node.where)
    op = QSoftmax(scale=1.0 / out_max, bits=bits, plan=plan)
    return QValue(lw.emit(node, op, [x.name]), 1.0 / out_max, bits)


def attention(lw: Lowering, node: Node) -> QValue:
    assert isinstance(node.op, ops.Attention)
    q, k, v = (lw.codes(i, 8) for i in node.inputs[:3])
    mask = node.op.mask_index(len(node.inputs))
    operands = [q.name, k.name, v.name]
    if mask is not None:
        operands.append(lw.value(node.inputs[mask]).name)
    bits, scale = _out(lw, node)
    plan = plans.plan_attention(
        _scale(q),
        _scale(k),
        _scale(v),
        node.op.scale,
        scale,
        bits,
        head_dim=lw.src.node(node.inputs[0]).type.shape[-1],
        logit_absmax=lw.calib.logit_ranges[node.name],
        causal=node.op.causal,
        p_bits=lw.options.attention_p_bits,
        loc=node.where,
    )
    if node.op.bias:
        step = plans.attention_logit_step(lw.calib.logit_ranges[node.name], node.where)
        operands.append(_attention_bias(lw, node, step).name)
    op = QAttention(scale=scale, bits=bits, plan=plan, bias=node.op.bias)
    return QValue(lw.emit(node, op, operands), scale, bits)


def _attention_bias(lw: Lowering, node: Node, step: float) -> QValue:
    """The additive bias as int16 codes at the logits' step: a constant bias (T5's relative
    positions, a static ALiBi) quantized once, a run-time one requantized."""
    name = node.inputs[-1]
    source = lw.src.node(name)
    if isinstance(source.op, ops.Constant):
        value = np.asarray(source.op.value, np.float64)
        if not np.all(np.isfinite(value)):
            raise CimcError(
                "attention bias has infinite entries: give masking as a bool mask", node.where
            )
        codes = np.asarray(qc.quantize_tensor(value, step, 16))
        op = QConstant(scale=step, bits=16, value=codes)
        helper = lw.helper_name(f"{node.name}_bias")
        return QValue(lw.out.add_node(op, [], helper, node.loc), step, 16)
    return lw.codes(name, 16, step)


def norm(lw: Lowering, node: Node) -> QValue:
    assert isinstance(node.op, ops.LayerNorm | ops.RmsNorm)
    x = lw.codes(node.inputs[0])
    rms = isinstance(node.op, ops.RmsNorm)
    gamma = _const(lw, node, 1, "gamma")
    beta = None if rms else _const(lw, node, 2, "beta")
    bits, scale = _out(lw, node)
    assert x.bits is not None
    plan = plans.plan_norm(
        gamma, beta, node.op.eps, _scale(x), x.bits, scale, bits, rms=rms, loc=node.where
    )
    cls = QRmsNorm if rms else QLayerNorm
    return QValue(lw.emit(node, cls(scale=scale, bits=bits, plan=plan), [x.name]), scale, bits)


RULES: dict[type[Op], Rule] = {
    ops.Linear: linear,
    ops.MatMul: matmul,
    ops.Add: add,
    ops.Sub: add,
    ops.Mul: mul,
    ops.Div: mul,
    ops.Clip: unary,
    **{cls: unary for cls in LUT_FUNCTIONS},
    ops.Gelu: activation,
    ops.Silu: activation,
    ops.Embedding: embedding,
    **{cls: reduce for cls in REDUCE_KINDS},
    ops.Rotary: rotary,
    ops.Softmax: softmax,
    ops.Attention: attention,
    ops.LayerNorm: norm,
    ops.RmsNorm: norm,
}
