"""Elementwise, reduction and normalization ops (numpy-style broadcasting)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cimc.errors import CimcError
from cimc.ir.op_base import (
    NUMERIC,
    Op,
    broadcast,
    expect,
    expect_dtype,
    expect_float,
    expect_normalized_axis,
    normalize_axis,
    register_op,
    same_dtype,
)
from cimc.ir.types import DType, TensorType

# ---- unary ----------------------------------------------------------------------------


@dataclass(frozen=True)
class UnaryFloat(Op):
    """f32 -> f32 elementwise function."""

    MIN_INPUTS = MAX_INPUTS = 1

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        expect_float(inputs[0], f"{self.NAME} operand")
        return inputs[0]


@dataclass(frozen=True)
class UnaryNumeric(Op):
    """Elementwise function of any numeric dtype, keeping the dtype."""

    MIN_INPUTS = MAX_INPUTS = 1

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        expect_dtype(inputs[0], NUMERIC, f"{self.NAME} operand")
        return inputs[0]


@register_op
@dataclass(frozen=True)
class Silu(UnaryFloat):
    """x * sigmoid(x)"""

    NAME = "silu"


@register_op
@dataclass(frozen=True)
class Tanh(UnaryFloat):
    """tanh(x)"""

    NAME = "tanh"


@register_op
@dataclass(frozen=True)
class Sigmoid(UnaryFloat):
    """1 / (1 + exp(-x))"""

    NAME = "sigmoid"


@register_op
@dataclass(frozen=True)
class Erf(UnaryFloat):
    """erf(x)"""

    NAME = "erf"


@register_op
@dataclass(frozen=True)
class Exp(UnaryFloat):
    """exp(x)"""

    NAME = "exp"


@register_op
@dataclass(frozen=True)
class Sqrt(UnaryFloat):
    """sqrt(x)"""

    NAME = "sqrt"


@register_op
@dataclass(frozen=True)
class Rsqrt(UnaryFloat):
    """1 / sqrt(x)"""

    NAME = "rsqrt"


@register_op
@dataclass(frozen=True)
class Reciprocal(UnaryFloat):
    """1 / x"""

    NAME = "reciprocal"


@register_op
@dataclass(frozen=True)
class Log(UnaryFloat):
    """log(x) (-inf at 0, NaN below)"""

    NAME = "log"


@register_op
@dataclass(frozen=True)
class Abs(UnaryNumeric):
    """|x|"""

    NAME = "abs"


@register_op
@dataclass(frozen=True)
class Relu(UnaryNumeric):
    """max(x, 0)"""

    NAME = "relu"


@register_op
@dataclass(frozen=True)
class Neg(UnaryNumeric):
    """-x"""

    NAME = "neg"


@register_op
@dataclass(frozen=True)
class Gelu(UnaryFloat):
    NAME = "gelu"
    approximate: str = "none"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.approximate not in ("none", "tanh"):
            raise CimcError(f"gelu approximate must be 'none' or 'tanh', got '{self.approximate}'")


@register_op
@dataclass(frozen=True)
class Pow(UnaryFloat):
    """x ** exponent with a constant exponent."""

    NAME = "pow"
    exponent: float


@register_op
@dataclass(frozen=True)
class Clip(UnaryFloat):
    """min(max(x, lo), hi) with constant bounds (ReLU6 is clip(x, 0, 6))."""

    NAME = "clip"
    lo: float
    hi: float

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        expect(self.lo <= self.hi, f"clip bounds must satisfy lo <= hi, got {self.lo} > {self.hi}")
        return super().infer(inputs)


# ---- binary ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BinaryArith(Op):
    MIN_INPUTS = MAX_INPUTS = 2

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        dtype = same_dtype(inputs, f"{self.NAME} operands")
        expect(dtype.is_numeric, f"{self.NAME} operands must be numeric, got {dtype}")
        return TensorType(broadcast(*(t.shape for t in inputs)), dtype)


@dataclass(frozen=True)
class Compare(Op):
    MIN_INPUTS = MAX_INPUTS = 2

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        same_dtype(inputs, f"{self.NAME} operands")
        return TensorType(broadcast(*(t.shape for t in inputs)), DType.BOOL)


@dataclass(frozen=True)
class Logical(Op):
    MIN_INPUTS = MAX_INPUTS = 2

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        for t in inputs:
            expect_dtype(t, (DType.BOOL,), f"{self.NAME} operand")
        return TensorType(broadcast(*(t.shape for t in inputs)), DType.BOOL)


@register_op
@dataclass(frozen=True)
class Add(BinaryArith):
    """a + b"""

    NAME = "add"


@register_op
@dataclass(frozen=True)
class Sub(BinaryArith):
    """a - b"""

    NAME = "sub"


@register_op
@dataclass(frozen=True)
class Mul(BinaryArith):
    """a * b"""

    NAME = "mul"


@register_op
@dataclass(frozen=True)
class Div(BinaryArith):
    """a / b (true division for f32)"""

    NAME = "div"


@register_op
@dataclass(frozen=True)
class Maximum(BinaryArith):
    """max(a, b) elementwise"""

    NAME = "maximum"


@register_op
@dataclass(frozen=True)
class Minimum(BinaryArith):
    """min(a, b) elementwise"""

    NAME = "minimum"


@register_op
@dataclass(frozen=True)
class Equal(Compare):
    """a == b"""

    NAME = "equal"


@register_op
@dataclass(frozen=True)
class Less(Compare):
    """a < b"""

    NAME = "less"


@register_op
@dataclass(frozen=True)
class Greater(Compare):
    """a > b"""

    NAME = "greater"


@register_op
@dataclass(frozen=True)
class LogicalAnd(Logical):
    """a and b"""

    NAME = "logical_and"


@register_op
@dataclass(frozen=True)
class LogicalOr(Logical):
    """a or b"""

    NAME = "logical_or"


@register_op
@dataclass(frozen=True)
class LogicalNot(Logical):
    NAME = "logical_not"
    MIN_INPUTS = MAX_INPUTS = 1


@register_op
@dataclass(frozen=True)
class Where(Op):
    """cond ? a : b with broadcasting."""

    NAME = "where"
    MIN_INPUTS = MAX_INPUTS = 3

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        cond, a, b = inputs
        expect_dtype(cond, (DType.BOOL,), "where condition")
        dtype = same_dtype((a, b), "where branches")
        return TensorType(broadcast(cond.shape, a.shape, b.shape), dtype)


# ---- scans ----------------------------------------------------------------------------


@register_op
@dataclass(frozen=True)
class CumSum(Op):
    """Running sum along `axis` (ONNX CumSum, torch.cumsum): y[i] = x[0] + ... + x[i];
    `exclusive` leaves x[i] out of y[i], `reverse` sums from the end."""

    NAME = "cumsum"
    MIN_INPUTS = MAX_INPUTS = 1
    axis: int
    exclusive: bool = False
    reverse: bool = False

    def normalize(self, inputs: tuple[TensorType, ...]) -> Op:
        axis = normalize_axis(self.axis, inputs[0].rank)
        return CumSum(axis, self.exclusive, self.reverse)

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        expect_normalized_axis(self.axis, inputs[0].rank)
        expect_dtype(inputs[0], NUMERIC, "cumsum operand")
        return inputs[0]


# ---- reductions and normalizations ----------------------------------------------------


@register_op
@dataclass(frozen=True)
class Softmax(UnaryFloat):
    NAME = "softmax"
    axis: int

    def normalize(self, inputs: tuple[TensorType, ...]) -> Op:
        return Softmax(normalize_axis(self.axis, inputs[0].rank))

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        expect_normalized_axis(self.axis, inputs[0].rank)
        return super().infer(inputs)


@register_op
@dataclass(frozen=True)
class LogSoftmax(UnaryFloat):
    """x - log(sum(exp(x))) along `axis`, computed stably."""

    NAME = "log_softmax"
    axis: int

    def normalize(self, inputs: tuple[TensorType, ...]) -> Op:
        return LogSoftmax(normalize_axis(self.axis, inputs[0].rank))

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        expect_normalized_axis(self.axis, inputs[0].rank)
        return super().infer(inputs)


@dataclass(frozen=True)
class Reduce(Op):
    """Reduce over sorted, non-negative, non-empty `axes`."""

    MIN_INPUTS = MAX_INPUTS = 1
    DTYPES: ClassVar[tuple[DType, ...]] = NUMERIC
    axes: tuple[int, ...]
    keepdim: bool = False

    def normalize(self, inputs: tuple[TensorType, ...]) -> Op:
        rank = inputs[0].rank
        axes = tuple(sorted({normalize_axis(a, rank) for a in self.axes}))
        return type(self)(axes, self.keepdim)

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        x = inputs[0]
        expect(len(self.axes) > 0, f"{self.NAME} needs at least one axis")
        expect(
            list(self.axes) == sorted(set(self.axes)) and all(0 <= a < x.rank for a in self.axes),
            f"{self.NAME} axes {list(self.axes)} must be sorted, unique and in [0, {x.rank})",
        )
        expect_dtype(x, self.DTYPES, f"{self.NAME} operand")
        if self.keepdim:
            shape = tuple(1 if i in self.axes else d for i, d in enumerate(x.shape))
        else:
            shape = tuple(d for i, d in enumerate(x.shape) if i not in self.axes)
        return TensorType(shape, x.dtype)


@register_op
@dataclass(frozen=True)
class ReduceMean(Reduce):
    NAME = "reduce_mean"
    DTYPES = (DType.F32,)


@register_op
@dataclass(frozen=True)
class ReduceSum(Reduce):
    NAME = "reduce_sum"


@register_op
@dataclass(frozen=True)
class ReduceMax(Reduce):
    NAME = "reduce_max"


@register_op
@dataclass(frozen=True)
class ReduceMin(Reduce):
    NAME = "reduce_min"


def _check_channel(param: TensorType, x: TensorType, what: str) -> None:
    expect_float(param, what)
    expect(
        param.shape == (x.shape[-1],),
        f"{what} must be [{x.shape[-1]}] (last axis of {x}), got {param}",
    )


@register_op
@dataclass(frozen=True)
class LayerNorm(Op):
    """(x - mean) / sqrt(var + eps) * gamma + beta over the last axis."""

    NAME = "layer_norm"
    MIN_INPUTS = MAX_INPUTS = 3
    eps: float

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        x, gamma, beta = inputs
        expect_float(x, "layer_norm input")
        expect(x.rank >= 1, "layer_norm input must have an axis to normalize")
        _check_channel(gamma, x, "layer_norm gamma")
        _check_channel(beta, x, "layer_norm beta")
        return x


@register_op
@dataclass(frozen=True)
class RmsNorm(Op):
    """x * rsqrt(mean(x^2) + eps) * gamma over the last axis."""

    NAME = "rms_norm"
    MIN_INPUTS = MAX_INPUTS = 2
    eps: float

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        x, gamma = inputs
        expect_float(x, "rms_norm input")
        expect(x.rank >= 1, "rms_norm input must have an axis to normalize")
        _check_channel(gamma, x, "rms_norm gamma")
        return x
