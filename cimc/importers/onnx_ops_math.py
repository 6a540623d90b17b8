"""Handlers of arithmetic, logic, reductions, normalization and MatMul/Gemm."""

from __future__ import annotations

import numpy as np
import onnx

from cimc.importers.onnx_translate import IsNanOf, Ref, Translator, Value, handles, ir_dtype
from cimc.ir import ops
from cimc.ir.op_base import OPS

_BINARY = {"Add": ops.Add, "Sub": ops.Sub, "Mul": ops.Mul, "Div": ops.Div}
_COMPARE = {"Equal": ops.Equal, "Less": ops.Less, "Greater": ops.Greater}
_UNARY = {
    "Sqrt": "sqrt",
    "Reciprocal": "reciprocal",
    "Erf": "erf",
    "Tanh": "tanh",
    "Sigmoid": "sigmoid",
    "Relu": "relu",
    "Neg": "neg",
    "Exp": "exp",
}
_REDUCE = {"ReduceMean": ops.ReduceMean, "ReduceSum": ops.ReduceSum, "ReduceMax": ops.ReduceMax}


def _runtime(inputs: list[Value | None]) -> Ref:
    """The first run-time operand (constants are cast to its dtype)."""
    return next(v for v in inputs if isinstance(v, Ref))


@handles(*_BINARY)
def binary(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    like = _runtime(inputs)
    a, b = (t.ref(v, like) for v in inputs)
    return [t.emit(_BINARY[node.op_type](), [a, b])]


@handles(*_COMPARE, "LessOrEqual", "GreaterOrEqual")
def compare(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    like = _runtime(inputs)
    a, b = (t.ref(v, like) for v in inputs)
    if node.op_type in _COMPARE:
        return [t.emit(_COMPARE[node.op_type](), [a, b])]
    # a <= b is not (a > b): exact for the integer and mask values exporters compare
    strict = ops.Greater() if node.op_type == "LessOrEqual" else ops.Less()
    return [t.emit(ops.LogicalNot(), [t.emit(strict, [a, b], "strict")])]


@handles("And", "Or", "Not")
def logical(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    op = {"And": ops.LogicalAnd, "Or": ops.LogicalOr, "Not": ops.LogicalNot}[node.op_type]
    return [t.emit(op(), inputs)]


@handles(*_UNARY)
def unary(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    return [t.emit(OPS[_UNARY[node.op_type]](), inputs)]


@handles("Gelu")
def gelu(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    """The opset-20 Gelu op (approximate = "none" or "tanh")."""
    approximate = t.attrs().get("approximate", b"none")  # a STRING attribute: bytes
    if approximate not in (b"none", b"tanh"):
        raise t.fail(f"Gelu approximate must be 'none' or 'tanh', got {approximate!r}")
    return [t.emit(ops.Gelu(approximate.decode()), inputs[:1])]


@handles("Pow")
def power(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    base, exponent = inputs
    if not isinstance(exponent, np.ndarray) or exponent.size != 1:
        raise t.fail("Pow needs a constant scalar exponent")
    return [t.emit(ops.Pow(float(exponent.reshape(()))), [base])]


@handles("Softmax")
def softmax(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    axis = int(t.attrs().get("axis", -1 if t.opset >= 13 else 1))
    return [t.emit(ops.Softmax(axis), inputs[:1])]


@handles("Cast")
def cast(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    x = t.ref(inputs[0])
    dtype = ir_dtype(int(t.attrs()["to"]), t.where)
    if t.type_of(x).dtype == dtype:
        return [x]
    return [t.emit(ops.Cast(dtype), [x])]


@handles("IsNaN")
def is_nan(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    return [IsNanOf(t.ref(inputs[0]), t.where)]


@handles("Where")
def where(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    cond, a, b = inputs
    if isinstance(cond, IsNanOf):
        # Where(IsNaN(p), 0, p): the exporters' guard for fully masked softmax rows. The
        # canonical attention defines those rows as zeros, so the guard is dropped here.
        if isinstance(a, np.ndarray) and not a.any() and isinstance(b, Ref) and b == cond.operand:
            return [cond.operand]
        raise t.fail("IsNaN is only supported as the Where(IsNaN(x), 0, x) softmax guard")
    like = next((v for v in (a, b) if isinstance(v, Ref)), None)
    refs = [t.ref(cond), t.ref(a, like), t.ref(b, like)]
    return [t.emit(ops.Where(), refs)]


@handles(*_REDUCE)
def reduce(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    attrs = t.attrs()
    x = t.ref(inputs[0])
    rank = t.type_of(x).rank
    if len(inputs) > 1 and inputs[1] is not None:
        if not isinstance(inputs[1], np.ndarray):
            raise t.fail(f"{node.op_type} needs constant axes")
        axes = [int(a) for a in inputs[1].reshape(-1)]
    else:
        axes = [int(a) for a in attrs.get("axes", [])]
    if not axes:
        if attrs.get("noop_with_empty_axes", 0):
            return [x]
        axes = list(range(rank))
    normalized = tuple(sorted({t.axis(a, rank) for a in axes}))
    keep = bool(attrs.get("keepdims", 1))
    return [t.emit(_REDUCE[node.op_type](normalized, keep), [x])]


@handles("LayerNormalization")
def layer_norm(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    attrs = t.attrs()
    x = t.ref(inputs[0])
    rank = t.type_of(x).rank
    if t.axis(int(attrs.get("axis", -1)), rank) != rank - 1:
        raise t.fail("LayerNormalization is supported over the last axis only")
    scale = inputs[1]
    bias = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
    if bias is None:
        assert scale is not None
        bias = np.zeros(t.type_of(scale).shape, dtype=np.float32)
    eps = float(attrs.get("epsilon", 1e-5))
    return [t.emit(ops.LayerNorm(eps), [x, t.ref(scale, x), t.ref(bias, x)])]


@handles("MatMul")
def matmul(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    a, b = inputs
    if isinstance(b, np.ndarray) and b.ndim == 2 and isinstance(a, Ref):
        return [t.emit(ops.Linear(), [a, t.ref(b, a)])]
    like = _runtime(inputs)
    return [t.emit(ops.MatMul(), [t.ref(a, like), t.ref(b, like)])]


@handles("Gemm")
def gemm(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    attrs = t.attrs()
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    if not isinstance(a, Ref) or not isinstance(b, np.ndarray):
        raise t.fail("Gemm is supported with a run-time A and a constant B only")
    if attrs.get("transA", 0):
        a = t.emit(ops.Transpose((1, 0)), [a], "transA")
    weight = (b.T if attrs.get("transB", 0) else b) * np.float32(attrs.get("alpha", 1.0))
    operands: list[Value] = [a, np.ascontiguousarray(weight, dtype=np.float32)]
    extra = None
    if c is not None:
        n = weight.shape[1]
        bias = c * np.float32(attrs.get("beta", 1.0)) if isinstance(c, np.ndarray) else None
        if bias is not None and bias.size == n and bias.shape[-1:] in ((n,), ()):
            operands.append(bias.reshape(n).astype(np.float32))
        else:
            extra = c
    out = t.emit(ops.Linear(), operands)
    if extra is not None:
        beta = np.float32(attrs.get("beta", 1.0))
        if beta != 1.0:
            extra = t.emit(ops.Mul(), [t.ref(extra), np.asarray(beta)], "beta")
        out = t.emit(ops.Add(), [out, t.ref(extra, out)], "bias")
    return [out]
