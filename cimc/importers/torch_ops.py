"""The aten op table, part 1: elementwise, reductions, normalization, linear, embedding.

A handler receives the translator and the fx node and returns the node's value (a `Ref`,
or a tuple of them). Operands that are constants are materialized on demand.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.fx import Node as FxNode

from cimc.importers.table_lookup import Lookup, lookup_of
from cimc.importers.torch_fx import Ref, ir_dtype, to_numpy
from cimc.importers.torch_translate import Handler, Translator
from cimc.ir import DType
from cimc.ir.op_base import Op
from cimc.ir.ops import (
    Add,
    Cast,
    CumSum,
    Div,
    Embedding,
    Equal,
    Erf,
    Exp,
    Gelu,
    Greater,
    LayerNorm,
    Less,
    Linear,
    LogicalAnd,
    LogicalNot,
    LogicalOr,
    MatMul,
    Maximum,
    Minimum,
    Mul,
    Neg,
    Pow,
    Reciprocal,
    ReduceMax,
    ReduceMean,
    ReduceSum,
    Relu,
    Reshape,
    Rsqrt,
    Sigmoid,
    Silu,
    Softmax,
    Sqrt,
    Sub,
    Tanh,
    Transpose,
    Where,
)

TABLE: dict[str, Handler] = {}


def bind(node: FxNode) -> dict[str, Any]:
    """The node's raw fx arguments by schema name, defaults filled in."""
    schema = node.target._schema  # type: ignore[union-attr]
    bound: dict[str, Any] = {}
    for k, arg in enumerate(schema.arguments):
        if not arg.kwarg_only and k < len(node.args):
            bound[arg.name] = node.args[k]
        elif arg.name in node.kwargs:
            bound[arg.name] = node.kwargs[arg.name]
        else:
            bound[arg.name] = arg.default_value if arg.has_default_value() else None
    return bound


def handles(*names: str) -> Any:
    def add(fn: Handler) -> Handler:
        for name in names:
            TABLE[name] = fn
        return fn

    return add


def operand_dtype(t: Translator, *args: Any) -> DType:
    """The dtype torch promotes these operands to (Python scalars are weak)."""
    values = [t.value(a) for a in args]
    samples = [torch.zeros((), dtype=dummy_dtype(t, v)) if is_tensorish(v) else v for v in values]
    result = samples[0]
    dtype = torch.result_type(result, samples[1]) if len(samples) > 1 else samples[0].dtype
    return ir_dtype(dtype, t.where)


def is_tensorish(value: Any) -> bool:
    return isinstance(value, Ref | torch.Tensor)


def dummy_dtype(t: Translator, value: Any) -> torch.dtype:
    if isinstance(value, torch.Tensor):
        return value.dtype
    return getattr(torch, t.b.type_of(value.name).dtype.numpy.name)


# ---- elementwise ----------------------------------------------------------------------

UNARY: dict[str, type[Op]] = {
    "aten.neg.default": Neg,
    "aten.exp.default": Exp,
    "aten.sqrt.default": Sqrt,
    "aten.rsqrt.default": Rsqrt,
    "aten.reciprocal.default": Reciprocal,
    "aten.tanh.default": Tanh,
    "aten.sigmoid.default": Sigmoid,
    "aten.relu.default": Relu,
    "aten.erf.default": Erf,
    "aten.silu.default": Silu,
}


@handles(*UNARY)
def unary(t: Translator, node: FxNode) -> Ref:
    op = UNARY[str(node.target)]()
    dtype = t.out_dtype() if op.NAME in ("neg", "relu") else DType.F32  # others are f32-only
    return t.emit(op, [t.name(node.args[0], dtype)])


@handles("aten.gelu.default")
def gelu(t: Translator, node: FxNode) -> Ref:
    a = bind(node)
    return t.emit(Gelu(approximate=a["approximate"]), [t.name(a["self"], DType.F32)])


@handles("aten.logical_not.default", "aten.bitwise_not.default")
def logical_not(t: Translator, node: FxNode) -> Ref:
    if t.type_of(node.args[0]).dtype != DType.BOOL:
        raise t.error(f"{node.target} is supported on bool tensors only")
    return t.emit(LogicalNot(), [t.name(node.args[0])])


BINARY: dict[str, type[Op]] = {
    "add": Add,
    "sub": Sub,
    "mul": Mul,
    "div": Div,
}


@handles(*(f"aten.{op}.{o}" for op in BINARY for o in ("Tensor", "Scalar")))
def arith(t: Translator, node: FxNode) -> Ref:
    a = bind(node)
    kind = str(node.target).split(".")[1]
    dtype = t.out_dtype()
    x, y = t.name(a["self"], dtype), t.name(a["other"], dtype)
    if a.get("alpha") not in (None, 1):  # add/sub: self + alpha * other
        y = t.emit(Mul(), [y, t.name(a["alpha"], dtype)], "alpha").name
    return t.emit(BINARY[kind](), [x, y])


@handles("aten.maximum.default", "aten.minimum.default")
def extremum(t: Translator, node: FxNode) -> Ref:
    op = Maximum() if str(node.target) == "aten.maximum.default" else Minimum()
    dtype = t.out_dtype()
    return t.emit(op, [t.name(node.args[0], dtype), t.name(node.args[1], dtype)])


@handles("aten.div.Tensor_mode")
def div_mode(t: Translator, node: FxNode) -> Ref:
    a = bind(node)
    if a["rounding_mode"] is not None:
        raise t.error(f"division with rounding_mode={a['rounding_mode']!r} is not supported")
    dtype = t.out_dtype()
    return t.emit(Div(), [t.name(a["self"], dtype), t.name(a["other"], dtype)])


@handles("aten.rsub.Scalar", "aten.rsub.Tensor")
def rsub(t: Translator, node: FxNode) -> Ref:
    a = bind(node)
    dtype = t.out_dtype()
    x, y = t.name(a["self"], dtype), t.name(a["other"], dtype)
    if a.get("alpha") not in (None, 1):
        x = t.emit(Mul(), [x, t.name(a["alpha"], dtype)], "alpha").name
    return t.emit(Sub(), [y, x])


@handles("aten.pow.Tensor_Scalar", "aten.pow.Tensor_Tensor")
def pow_(t: Translator, node: FxNode) -> Ref:
    exponent = t.value(node.args[1])
    if isinstance(exponent, torch.Tensor) and exponent.numel() == 1:
        exponent = exponent.item()
    if not isinstance(exponent, int | float):
        raise t.error("pow with a run-time exponent is not supported")
    return t.emit(Pow(exponent=float(exponent)), [t.name(node.args[0], DType.F32)])


COMPARE = {"eq": (Equal, False), "ne": (Equal, True), "lt": (Less, False),
           "gt": (Greater, False), "le": (Greater, True), "ge": (Less, True)}  # fmt: skip


@handles(*(f"aten.{op}.{o}" for op in COMPARE for o in ("Tensor", "Scalar")))
def compare(t: Translator, node: FxNode) -> Ref:
    op, negate = COMPARE[str(node.target).split(".")[1]]
    dtype = operand_dtype(t, node.args[0], node.args[1])
    x, y = t.name(node.args[0], dtype), t.name(node.args[1], dtype)
    result = t.emit(op(), [x, y], "cmp" if negate else "")
    return t.emit(LogicalNot(), [result.name]) if negate else result


LOGICAL = {"and": LogicalAnd, "or": LogicalOr}


@handles(*(f"aten.{p}{op}{s}" for op in LOGICAL for p, s in
           (("__", "__.Tensor"), ("bitwise_", ".Tensor"), ("logical_", ".default"))))  # fmt: skip
def logical(t: Translator, node: FxNode) -> Ref:
    kind = "and" if "and" in str(node.target) else "or"
    if t.out_dtype() != DType.BOOL:
        raise t.error(f"{node.target} is supported on bool tensors only")
    x, y = (t.name(a, DType.BOOL) for a in node.args[:2])
    return t.emit(LOGICAL[kind](), [x, y])


@handles("aten.where.self", "aten.where.ScalarSelf", "aten.where.ScalarOther", "aten.where.Scalar")
def where(t: Translator, node: FxNode) -> Ref:
    cond, x, y = node.args[:3]
    dtype = t.out_dtype()
    return t.emit(Where(), [t.name(cond, DType.BOOL), t.name(x, dtype), t.name(y, dtype)])


@handles("aten.masked_fill.Scalar", "aten.masked_fill.Tensor")
def masked_fill(t: Translator, node: FxNode) -> Ref:
    x, mask, fill = node.args[:3]
    dtype = t.out_dtype()
    return t.emit(Where(), [t.name(mask, DType.BOOL), t.name(fill, dtype), t.name(x, dtype)])


@handles("aten._to_copy.default", "aten.to.dtype", "aten.to.dtype_layout", "aten.to.device",
         "aten.type_as.default")  # fmt: skip
def to_copy(t: Translator, node: FxNode) -> Ref:
    return t.emit(Cast(t.out_dtype()), [t.name(node.args[0])])


@handles("aten.clone.default", "aten.alias.default", "aten.detach.default",
         "aten.contiguous.default", "aten.lift_fresh_copy.default", "aten.dropout.default",
         "aten.native_dropout.default")  # fmt: skip
def no_op(t: Translator, node: FxNode) -> Any:
    value = t.value(node.args[0])
    if str(node.target) == "aten.native_dropout.default":
        return (value, None)
    return value


# ---- reductions and normalization -----------------------------------------------------

REDUCE = {
    "aten.mean.dim": ReduceMean,
    "aten.sum.dim_IntList": ReduceSum,
    "aten.amax.default": ReduceMax,
}


@handles(*REDUCE)
def reduce(t: Translator, node: FxNode) -> Ref:
    a = bind(node)
    x = t.name(a["self"], t.out_dtype())
    rank = t.b.type_of(x).rank
    dims = t.value(a["dim"])
    axes = tuple(range(rank)) if dims in (None, []) else tuple(sorted(d % rank for d in dims))
    return t.emit(REDUCE[str(node.target)](axes=axes, keepdim=bool(a["keepdim"])), [x])


@handles("aten._softmax.default", "aten.softmax.int", "aten._safe_softmax.default")
def softmax(t: Translator, node: FxNode) -> Ref:
    return t.emit(Softmax(axis=int(t.value(node.args[1]))), [t.name(node.args[0], DType.F32)])


@handles("aten.layer_norm.default", "aten.native_layer_norm.default")
def layer_norm(t: Translator, node: FxNode) -> Any:
    a = bind(node)
    x = t.name(a["input"], DType.F32)
    shape = tuple(t.value(a["normalized_shape"]))
    channels = t.b.shape(x)[-1]
    if shape != (channels,):
        raise t.error(f"layer_norm over {list(shape)} is supported over the last axis only")
    gamma = param_or(t, a["weight"], 1.0, channels, "gamma")
    beta = param_or(t, a["bias"], 0.0, channels, "beta")
    out = t.emit(LayerNorm(eps=float(t.value(a["eps"]))), [x, gamma, beta])
    return (out, None, None) if "native" in str(node.target) else out


def param_or(t: Translator, arg: Any, fill: float, channels: int, what: str) -> str:
    """A constant per-channel parameter, or `fill` everywhere when it is absent."""
    if arg is None:
        return t.b.constant(torch.full((channels,), fill).numpy(), t.fresh(what))
    if t.is_runtime(arg):
        raise t.error(f"layer_norm {what} must be a constant")
    return t.name(arg, DType.F32)


# ---- linear algebra -------------------------------------------------------------------


@handles("aten.linear.default")
def linear(t: Translator, node: FxNode) -> Ref:
    a = bind(node)
    x = t.name(a["input"], DType.F32)
    bias = [] if a["bias"] is None else [t.name(a["bias"], DType.F32)]
    if not t.is_runtime(a["weight"]):
        return t.emit(Linear(), [x, t.name(a["weight"], DType.F32, layout="kn"), *bias])
    w = t.name(a["weight"], DType.F32)
    wt = t.emit(Transpose((1, 0)), [w], "wt")
    out = t.emit(MatMul(), [x, wt.name], "matmul" if bias else "")
    return t.emit(Add(), [out.name, *bias]) if bias else out


@handles("aten.addmm.default")
def addmm(t: Translator, node: FxNode) -> Ref:
    a = bind(node)
    if t.value(a["beta"]) != 1 or t.value(a["alpha"]) != 1:
        raise t.error("addmm with beta or alpha other than 1 is not supported")
    bias = t.value(a["self"])
    if isinstance(bias, torch.Tensor) and not t.is_runtime(a["mat2"]):
        n = t.type_of(a["mat2"]).shape[1]
        if bias.numel() == n:  # the common case: one fused linear layer
            b = t.b.constant(to_numpy(bias, t.where).reshape(n), a["self"].name)
            w = t.name(a["mat2"], DType.F32)
            return t.emit(Linear(), [t.name(a["mat1"], DType.F32), w, b])
    product = matmul_of(t, a["mat1"], a["mat2"], "mm")
    return t.emit(Add(), [product.name, t.name(a["self"], DType.F32)])


@handles("aten.mm.default", "aten.bmm.default", "aten.matmul.default")
def matmul(t: Translator, node: FxNode) -> Ref:
    return matmul_of(t, node.args[0], node.args[1])


def matmul_of(t: Translator, x_arg: Any, w_arg: Any, suffix: str = "") -> Ref:
    """x @ w: a linear layer when w is a 2-D constant, else a run-time matmul."""
    x = t.name(x_arg, DType.F32)
    if not t.is_runtime(w_arg) and t.type_of(w_arg).rank == 2:
        return t.emit(Linear(), [x, t.name(w_arg, DType.F32)], suffix)
    w = t.name(w_arg, DType.F32)
    if t.b.type_of(x).rank < 2 or t.b.type_of(w).rank < 2:
        raise t.error("matmul of vectors (rank 1) is not supported")
    return t.emit(MatMul(), [x, w], suffix)


@handles("aten.embedding.default")
def embedding(t: Translator, node: FxNode) -> Ref:
    a = bind(node)
    if t.is_runtime(a["weight"]):
        raise t.error("embedding needs a constant table")
    return t.emit(Embedding(), [t.name(a["indices"]), t.name(a["weight"], DType.F32)])


@handles("aten.cumsum.default")
def cumsum(t: Translator, node: FxNode) -> Ref:
    """torch.cumsum (its `dtype` argument is the output's dtype: the sum runs in it)."""
    a = bind(node)
    rank = t.type_of(a["self"]).rank
    if rank == 0:
        raise t.error("cumsum of a 0-d tensor is not supported; give it an axis")
    axis = int(a["dim"]) % rank
    return t.emit(CumSum(axis), [t.name(a["self"], t.out_dtype())])


@handles("aten.gather.default", "aten.index_select.default")
def gather_constant(t: Translator, node: FxNode) -> Ref:
    """A constant read at run-time indices: an embedding lookup (table_lookup.py)."""
    a = bind(node)
    data, index = t.value(a["self"]), a["index"]
    if not isinstance(data, torch.Tensor) or not t.is_runtime(index):
        raise t.error(
            f"{node.target} is supported on a constant with run-time indices only; "
            "index run-time data with slices or constant indices"
        )
    array = to_numpy(data, t.where)
    axis = int(a["dim"]) % max(array.ndim, 1)
    shape = t.type_of(index).shape
    if str(node.target) == "aten.gather.default":
        plan = lookup_of("GatherElements", array, axis, shape)
    else:
        plan = lookup_of("Gather", array, axis, shape)
    return emit_lookup(t, plan, t.name(index, DType.I64))


def emit_lookup(t: Translator, plan: Lookup, index: str) -> Ref:
    rows = index
    if plan.stride != 1:
        scale = t.b.constant(np.array(plan.stride, np.int64), t.fresh("stride"))
        rows = t.emit(Mul(), [rows, scale], "rows").name
    if plan.offset is not None:
        offset = t.b.constant(plan.offset, t.fresh("offset"))
        rows = t.emit(Add(), [rows, offset], "offset").name
    table = t.b.constant(plan.table, t.fresh("table"))
    y = t.emit(Embedding(), [rows, table], "lookup")
    if plan.perm is None:
        return t.emit(Reshape(plan.out_shape), [y.name])
    view = t.emit(Reshape(plan.view_shape), [y.name], "view")
    return t.emit(Transpose(plan.perm), [view.name])


# ---- higher-order wrappers ------------------------------------------------------------


@handles("wrap_with_set_grad_enabled")
def grad_mode_region(t: Translator, node: FxNode) -> tuple[Any, ...]:
    """A no_grad / enable_grad region: grad mode does not matter for inference."""
    return t.inline(t.value(node.args[1]), tuple(t.value(a) for a in node.args[2:]))


@handles("wrap_with_autocast")
def autocast_region(t: Translator, node: FxNode) -> tuple[Any, ...]:
    """An autocast region; only disabled ones (float32 islands) are supported."""
    if t.value(node.args[2]):
        raise t.error("autocast (mixed precision) regions are not supported: export in float32")
    return t.inline(t.value(node.args[4]), tuple(t.value(a) for a in node.args[5:]))
