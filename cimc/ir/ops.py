"""Every canonical op, importable from one place (the op contract: cimc/ir/__init__.py).

    from cimc.ir.ops import Linear, LayerNorm, Attention, OPS

`OPS` maps the IR name (``layer_norm``) to the op class; importing this module fills it
with the canonical ops, listed in `CANONICAL_OPS`.
"""

from __future__ import annotations

from cimc.ir.op_base import OPS, Op, OpTypeError, attribute_schema, op_class, register_op
from cimc.ir.ops_conv import Conv, Im2col, Pool
from cimc.ir.ops_math import (
    Abs,
    Add,
    Clip,
    CumSum,
    Div,
    Equal,
    Erf,
    Exp,
    Gelu,
    Greater,
    LayerNorm,
    Less,
    Log,
    LogicalAnd,
    LogicalNot,
    LogicalOr,
    LogSoftmax,
    Maximum,
    Minimum,
    Mul,
    Neg,
    Pow,
    Reciprocal,
    ReduceMax,
    ReduceMean,
    ReduceMin,
    ReduceSum,
    Relu,
    RmsNorm,
    Rsqrt,
    Sigmoid,
    Silu,
    Softmax,
    Sqrt,
    Sub,
    Tanh,
    Where,
)
from cimc.ir.ops_nn import Attention, Linear, MatMul, Rotary
from cimc.ir.ops_tensor import (
    INPUT_MEANINGS,
    Cast,
    Concat,
    Constant,
    Embedding,
    Expand,
    Gather,
    Input,
    Reshape,
    Slice,
    Transpose,
)

CANONICAL_OPS: frozenset[str] = frozenset(
    cls.NAME
    for cls in list(globals().values())
    if isinstance(cls, type) and issubclass(cls, Op) and OPS.get(cls.NAME) is cls
)
"""The IR names of the canonical (float-level) ops (OPS may hold more: dialects such as
cimc.quant.dialect register their own ops when imported)."""

__all__ = [
    "CANONICAL_OPS",
    "INPUT_MEANINGS",
    "OPS",
    "Abs",
    "Add",
    "Attention",
    "Cast",
    "Clip",
    "Concat",
    "Constant",
    "Conv",
    "CumSum",
    "Div",
    "Embedding",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "Gather",
    "Gelu",
    "Im2col",
    "Greater",
    "Input",
    "LayerNorm",
    "Less",
    "Log",
    "LogSoftmax",
    "Linear",
    "LogicalAnd",
    "LogicalNot",
    "LogicalOr",
    "MatMul",
    "Maximum",
    "Minimum",
    "Mul",
    "Neg",
    "Op",
    "OpTypeError",
    "Pool",
    "Pow",
    "Reciprocal",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceSum",
    "Relu",
    "Reshape",
    "RmsNorm",
    "Rotary",
    "Rsqrt",
    "Sigmoid",
    "Silu",
    "Slice",
    "Softmax",
    "Sqrt",
    "Sub",
    "Tanh",
    "Transpose",
    "Where",
    "attribute_schema",
    "op_class",
    "register_op",
]
