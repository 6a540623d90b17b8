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
    "Abs": "abs",
    "Log": "log",
}
_REDUCE = {
    "ReduceMean": ops.ReduceMean,
    "ReduceSum": ops.ReduceSum,
    "ReduceMax": ops.ReduceMax,
    "ReduceMin": ops.ReduceMin,
}
# Reductions spelled with the ones above: (op applied first, reduction, op applied after).
_COMPOSED_REDUCE = {
    "ReduceSumSquare": ("square", "ReduceSum", None),
    "ReduceL1": ("abs", "ReduceSum", None),
    "ReduceL2": ("square", "ReduceSum", "sqrt"),
    "ReduceLogSum": (None, "ReduceSum", "log"),
    "ReduceLogSumExp": ("exp", "ReduceSum", "log"),
}


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


@handles("Softmax", "LogSoftmax")
def softmax(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    axis = int(t.attrs().get("axis", -1 if t.opset >= 13 else 1))
    op = ops.Softmax if node.op_type == "Softmax" else ops.LogSoftmax
    return [t.emit(op(axis), inputs[:1])]


_VARIADIC = {"Max": ops.Maximum, "Min": ops.Minimum, "Sum": ops.Add, "Mean": ops.Add}


@handles(*_VARIADIC)
def variadic(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    """Max / Min / Sum / Mean of any number of broadcast operands, pairwise."""
    like = _runtime(inputs)
    refs = [t.ref(v, like) for v in inputs]
    out = refs[0]
    for k, other in enumerate(refs[1:]):
        out = t.emit(_VARIADIC[node.op_type](), [out, other], f"{k}")
    if node.op_type == "Mean" and len(refs) > 1:
        if not t.type_of(out).dtype.is_float:
            raise t.fail("Mean is supported on float tensors only")
        out = t.emit(ops.Mul(), [out, np.asarray(1.0 / len(refs), np.float32)], "mean")
    return [out]


@handles("CumSum")
def cumsum(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    x, axis = inputs[0], inputs[1]
    if not isinstance(axis, np.ndarray) or axis.size != 1:
        raise t.fail("CumSum needs a constant axis")
    rank = t.type_of(x).rank if x is not None else 0
    if rank == 0:
        raise t.fail("CumSum of a 0-d tensor is not defined; give it at least one axis")
    attrs = t.attrs()
    op = ops.CumSum(
        t.axis(int(axis.reshape(())), rank),
        bool(attrs.get("exclusive", 0)),
        bool(attrs.get("reverse", 0)),
    )
    return [t.emit(op, [x])]


@handles("CastLike")
def cast_like(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    x, like = t.ref(inputs[0]), inputs[1]
    assert like is not None  # a required input (onnx_schema checked it)
    dtype = t.type_of(like).dtype
    return [x if t.type_of(x).dtype == dtype else t.emit(ops.Cast(dtype), [x])]


@handles("Trilu")
def trilu(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    """The lower or upper triangle of the last two axes: a constant mask and a where."""
    x = t.ref(inputs[0])
    k = inputs[1] if len(inputs) > 1 else None
    if k is not None and not isinstance(k, np.ndarray):
        raise t.fail("Trilu needs a constant k")
    diagonal = int(k.reshape(())) if k is not None else 0
    shape = t.type_of(x).shape
    if len(shape) < 2:
        raise t.fail(f"Trilu needs rank >= 2, got rank {len(shape)}")
    ones = np.ones(shape[-2:], dtype=bool)
    mask = np.triu(ones, diagonal) if t.attrs().get("upper", 1) else np.tril(ones, diagonal)
    zero = np.zeros((), dtype=t.type_of(x).dtype.numpy)
    return [t.emit(ops.Where(), [mask, x, t.ref(zero, x)])]


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


@handles(*_REDUCE, *_COMPOSED_REDUCE)
def reduce(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    x = t.ref(inputs[0])
    before, kind, after = _COMPOSED_REDUCE.get(node.op_type, (None, node.op_type, None))
    axes = _reduce_axes(t, inputs, t.type_of(x).rank)
    if axes is None:
        return [x]
    if before == "square":
        x = t.emit(ops.Mul(), [x, x], "square")
    elif before is not None:
        x = t.emit(OPS[before](), [x], before)
    keep = bool(t.attrs().get("keepdims", 1))
    out = t.emit(_REDUCE[kind](axes, keep), [x], "reduce" if after else "")
    return [t.emit(OPS[after](), [out])] if after else [out]


def _reduce_axes(t: Translator, inputs: list[Value | None], rank: int) -> tuple[int, ...] | None:
    """The reduced axes, sorted; None when empty axes mean "no reduction"."""
    attrs = t.attrs()
    if len(inputs) > 1 and inputs[1] is not None:
        if not isinstance(inputs[1], np.ndarray):
            raise t.fail("the reduction needs constant axes")
        axes = [int(a) for a in inputs[1].reshape(-1)]
    else:
        axes = [int(a) for a in attrs.get("axes", [])]
    if not axes:
        if attrs.get("noop_with_empty_axes", 0):
            return None
        axes = list(range(rank))
    return tuple(sorted({t.axis(a, rank) for a in axes}))


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
        return [_gemm_runtime(t, a, b, c, attrs)]
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


def _gemm_runtime(
    t: Translator, a: Value | None, b: Value | None, c: Value | None, attrs: dict
) -> Ref:
    """alpha * A' @ B' + beta * C with a run-time B (or a constant A): a matmul of the
    (transposed) operands, scaled, plus C broadcast."""
    like = _runtime([a, b])
    x, y = t.ref(a, like), t.ref(b, like)
    if attrs.get("transA", 0):
        x = t.emit(ops.Transpose((1, 0)), [x], "transA")
    if attrs.get("transB", 0):
        y = t.emit(ops.Transpose((1, 0)), [y], "transB")
    out = t.emit(ops.MatMul(), [x, y], "matmul")
    alpha, beta = np.float32(attrs.get("alpha", 1.0)), np.float32(attrs.get("beta", 1.0))
    if alpha != 1.0:
        out = t.emit(ops.Mul(), [out, np.asarray(alpha)], "alpha")
    if c is None:
        return out
    if isinstance(c, np.ndarray):
        bias: Value = (c * beta).astype(np.float32)
    else:
        bias = t.emit(ops.Mul(), [c, np.asarray(beta)], "beta") if beta != 1.0 else c
    return t.emit(ops.Add(), [out, t.ref(bias, out)])
