"""The quantized dialect: integer ops that each hold the plan of their recipe.

A q-op produces symmetric integer codes (``real = code * scale``) of `bits` bits (i8 or i16)
and carries, as typed attributes, its output `scale` (compile-time float64, used only to
dequantize) and its plan (cimc.quant.plans: every integer constant of its recipe, computed
once by the quantize pass). Weights live inside the plans, so `q.linear` has one operand.
Data-movement ops (reshape, transpose, slice, concat, gather, expand) and mask logic stay
canonical ops on integer / bool values; codes pass through them unchanged, so a value's
scale is that of the q-op it comes from (see cimc.quant.golden.value_scales).

    %fc = q.linear(%x) {bits = 8, plan = LinearPlan<weight = @fc.plan.weight : i8[16, 32],
                        bias = ..., requant = Requant<...>>, scale = 0.0123} : i8[1, 8, 32]

Plans are struct attributes (cimc.ir.op_base): the IR text spells them out field by field,
small arrays inline and large ones by reference, so a quantized graph parses back exactly.

`q.quantize` is the one host-side op: float input -> codes at the graph boundary.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from cimc.errors import CimcError
from cimc.ir.op_base import INTEGER, Op, broadcast, expect, expect_dtype, register_op
from cimc.ir.ops_nn import attention_attributes, attention_mask_index
from cimc.ir.types import DType, TensorType
from cimc.quant.constants import Requant, qmax
from cimc.quant.plan_arrays import Codes
from cimc.quant.plans import (
    AddPlan,
    AttentionPlan,
    EmbeddingPlan,
    LinearPlan,
    LutPlan,
    MatmulPlan,
    MulPlan,
    NormPlan,
    RampLutPlan,
    ReducePlan,
    RotaryPlan,
    SoftmaxPlan,
)

CODE_DTYPES = (DType.I8, DType.I16)


def code_dtype(bits: int) -> DType:
    return DType.I8 if bits == 8 else DType.I16


@dataclass(frozen=True, eq=False)
class QOp(Op):
    """Base of the q-ops: output codes of `bits` bits at `scale`; subclasses add `plan`."""

    scale: float
    bits: int
    INT8_OPERANDS: ClassVar[tuple[int, ...]] = ()  # operands that must be int8 codes
    CODE_OPERANDS: ClassVar[tuple[int, ...]] = (0,)  # operands that must be i8/i16 codes

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bits not in (8, 16):
            raise CimcError(f"{self.NAME}: bits must be 8 or 16, got {self.bits}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise CimcError(f"{self.NAME}: scale must be positive and finite, got {self.scale}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QOp) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    @property
    def out_range(self) -> int:
        """Largest |code| the plan can produce (checked against `bits`)."""
        plan = getattr(self, "plan", None)
        return qmax(self.bits) if plan is None else plan_range(plan)

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        for k in self.CODE_OPERANDS:
            if k < len(inputs):
                expect_dtype(inputs[k], CODE_DTYPES, f"{self.NAME} operand {k}")
        for k in self.INT8_OPERANDS:
            expect_dtype(inputs[k], (DType.I8,), f"{self.NAME} operand {k} (int8 codes)")
        expect(self.out_range <= qmax(self.bits), f"{self.NAME} plan exceeds {self.bits} bits")
        shape = self.shape(inputs)
        for rq in _requants(getattr(self, "plan", None)):
            per_channel = (shape[-1],) if shape else ()
            expect(
                rq.mult.shape == rq.shift.shape and rq.mult.shape in ((), per_channel),
                f"{self.NAME} requant multipliers must be [] or {list(per_channel)}",
            )
        return TensorType(shape, code_dtype(self.bits))

    def shape(self, inputs: tuple[TensorType, ...]) -> tuple[int, ...]:
        return inputs[0].shape


def _requants(value: Any) -> list[Requant]:
    """Every Requant inside a plan (the plan itself, its fields, recursively)."""
    if isinstance(value, Requant):
        return [value]
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return []
    return [rq for f in dataclasses.fields(value) for rq in _requants(getattr(value, f.name))]


def _table_of_256(table: np.ndarray, what: str) -> None:
    expect(table.shape == (256,), f"{what} must have 256 entries, got {list(table.shape)}")


def plan_range(plan: Any) -> int:
    """Largest |output code| of a plan: its clamp bounds, softmax out_max or table entries."""
    if hasattr(plan, "lo"):
        return max(abs(plan.lo), abs(plan.hi))
    if hasattr(plan, "requant"):
        return plan_range(plan.requant)
    if hasattr(plan, "out_max"):
        return int(plan.out_max)
    table = plan.table  # an embedding table may hold most of a model: no widened copy
    return max(abs(int(table.max())), abs(int(table.min()))) if table.size else 0


class RunTimeMacroOperands:
    """Interface of q-ops that write run-time operands into macros (attention's K^T and V,
    a matmul's right operand): the backend keeps macros free for them."""

    def macro_operands(self, inputs: tuple[TensorType, ...]) -> tuple[tuple[int, int], ...]:
        """The [K x N] shapes of the operands written into macros at once."""
        raise NotImplementedError


class SharedStorage:
    """Interface of ops whose lowering declares shared memory beyond their result (a KV
    cache, a mask table): the memory planner keeps DRAM for it."""

    def shared_storage(self, node: str, inputs: tuple[TensorType, ...]) -> dict[str, int]:
        """Bytes per declaration, keyed by a name unique to what is declared (`node`: the
        op's node name; a name several ops share is counted once)."""
        raise NotImplementedError


@register_op
@dataclass(frozen=True, eq=False)
class QQuantize(QOp):
    """Host-side quantization of a float graph input: clamp(rint(x / scale))."""

    NAME = "q.quantize"
    MIN_INPUTS = MAX_INPUTS = 1
    CODE_OPERANDS = ()

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        expect_dtype(inputs[0], (DType.F32,), "q.quantize operand")
        return TensorType(inputs[0].shape, code_dtype(self.bits))


@register_op
@dataclass(frozen=True, eq=False)
class QConstant(QOp):
    """A constant activation operand (e.g. an added position table), stored as codes."""

    NAME = "q.constant"
    value: Codes
    CODE_OPERANDS = ()

    def shape(self, inputs: tuple[TensorType, ...]) -> tuple[int, ...]:
        expect(self.value.dtype == code_dtype(self.bits).numpy, "q.constant dtype != bits")
        return tuple(self.value.shape)


@register_op
@dataclass(frozen=True, eq=False)
class QRequant(QOp):
    """Change of scale and/or width: REQ(x, M, s) per tensor (or per channel)."""

    NAME = "q.requant"
    MIN_INPUTS = MAX_INPUTS = 1
    plan: Requant


@register_op
@dataclass(frozen=True, eq=False)
class QLinear(QOp):
    """y = REQ(x_i8 @ W_i8 + bias_i32) per output channel; W and bias live in the plan."""

    NAME = "q.linear"
    MIN_INPUTS = MAX_INPUTS = 1
    INT8_OPERANDS = (0,)
    plan: LinearPlan

    def shape(self, inputs: tuple[TensorType, ...]) -> tuple[int, ...]:
        x = inputs[0]
        k, n = self.plan.weight.shape
        expect(x.rank >= 1 and x.shape[-1] == k, f"q.linear input {x} does not have K={k}")
        expect(self.plan.bias.shape == (n,), f"q.linear bias must be [{n}]")
        return (*x.shape[:-1], n)


@register_op
@dataclass(frozen=True, eq=False)
class QMaskedLinear(QLinear):
    """y = REQ(x_i8 @ W_i8 + bias_i32) where mask != 0, else code 0: an up-projection
    behind a sparsity predictor (cimc/quant/predictor.py), whose output columns of
    predicted-inactive neurons need not be computed, so their weights need not be loaded.
    The mask has y's shape (0/1 codes, one per token and neuron)."""

    NAME = "q.linear.masked"
    MIN_INPUTS = MAX_INPUTS = 2
    CODE_OPERANDS = (0, 1)

    def shape(self, inputs: tuple[TensorType, ...]) -> tuple[int, ...]:
        out = super().shape(inputs[:1])
        expect(inputs[1].shape == out, f"q.linear.masked mask must be {list(out)}")
        return out


@register_op
@dataclass(frozen=True, eq=False)
class QMatMul(QOp, RunTimeMacroOperands):
    """y = REQ(a_i8 @ b_i8) of two run-time values."""

    NAME = "q.matmul"
    MIN_INPUTS = MAX_INPUTS = 2
    INT8_OPERANDS = CODE_OPERANDS = (0, 1)
    plan: MatmulPlan

    def macro_operands(self, inputs: tuple[TensorType, ...]) -> tuple[tuple[int, int], ...]:
        return ((inputs[1].shape[-2], inputs[1].shape[-1]),)

    def shape(self, inputs: tuple[TensorType, ...]) -> tuple[int, ...]:
        a, b = inputs
        expect(a.rank >= 2 and b.rank >= 2 and a.shape[-1] == b.shape[-2], "q.matmul K mismatch")
        return (*broadcast(a.shape[:-2], b.shape[:-2]), a.shape[-2], b.shape[-1])


@dataclass(frozen=True, eq=False)
class _QBroadcast(QOp):
    """Two code operands broadcast against each other."""

    MIN_INPUTS = MAX_INPUTS = 2
    CODE_OPERANDS = (0, 1)

    def shape(self, inputs: tuple[TensorType, ...]) -> tuple[int, ...]:
        return broadcast(inputs[0].shape, inputs[1].shape)


@register_op
@dataclass(frozen=True, eq=False)
class QAdd(_QBroadcast):
    """y = clamp(RSHR(a*Ma + b*Mb, s)): residual adds and subtractions (sign in Mb)."""

    NAME = "q.add"
    plan: AddPlan


@register_op
@dataclass(frozen=True, eq=False)
class QMul(_QBroadcast):
    """y = REQ(a * b) elementwise."""

    NAME = "q.mul"
    plan: MulPlan


@register_op
@dataclass(frozen=True, eq=False)
class QLut(QOp):
    """y = LUT8(x_i8, T): any elementwise function `fn` (gelu, silu, tanh, exp...)."""

    NAME = "q.lut"
    MIN_INPUTS = MAX_INPUTS = 1
    INT8_OPERANDS = (0,)
    fn: str
    plan: LutPlan

    def shape(self, inputs: tuple[TensorType, ...]) -> tuple[int, ...]:
        _table_of_256(self.plan.table, "q.lut table")
        return inputs[0].shape


@register_op
@dataclass(frozen=True, eq=False)
class QRampLut(QOp):
    """y = relu part of f(x) + LUT8 of f(x) - relu(x) (gelu, silu) on int8/int16 x."""

    NAME = "q.lut.ramp"
    MIN_INPUTS = MAX_INPUTS = 1
    fn: str
    plan: RampLutPlan

    def shape(self, inputs: tuple[TensorType, ...]) -> tuple[int, ...]:
        _table_of_256(self.plan.table, "q.lut.ramp table")
        return inputs[0].shape


@register_op
@dataclass(frozen=True, eq=False)
class QReduce(QOp):
    """y = REQ(RSUM(x)) or REQ(RMAX(x)) over `axes` (the plan's kind; mean folds 1/n in)."""

    NAME = "q.reduce"
    MIN_INPUTS = MAX_INPUTS = 1
    axes: tuple[int, ...]
    keepdim: bool
    plan: ReducePlan

    def shape(self, inputs: tuple[TensorType, ...]) -> tuple[int, ...]:
        x = inputs[0]
        expect(all(0 <= a < x.rank for a in self.axes), f"q.reduce axes {self.axes} for {x}")
        if self.keepdim:
            return tuple(1 if k in self.axes else d for k, d in enumerate(x.shape))
        return tuple(d for k, d in enumerate(x.shape) if k not in self.axes)


@register_op
@dataclass(frozen=True, eq=False)
class QEmbedding(QOp):
    """y = T[ids] with the table stored as codes at the output scale."""

    NAME = "q.embedding"
    MIN_INPUTS = MAX_INPUTS = 1
    CODE_OPERANDS = ()
    plan: EmbeddingPlan

    def shape(self, inputs: tuple[TensorType, ...]) -> tuple[int, ...]:
        expect_dtype(inputs[0], INTEGER, "q.embedding ids")
        expect(self.plan.table.dtype == code_dtype(self.bits).numpy, "q.embedding table width")
        return (*inputs[0].shape, self.plan.table.shape[1])


@register_op
@dataclass(frozen=True, eq=False)
class QRotary(QOp):
    """y = REQ(x*C + rotate_half(x)*S) with Q1.14 cos/sin tables in the plan."""

    NAME = "q.rotary"
    MIN_INPUTS = MAX_INPUTS = 1
    plan: RotaryPlan

    def shape(self, inputs: tuple[TensorType, ...]) -> tuple[int, ...]:
        x = inputs[0]
        expect(x.shape[-1] % 2 == 0, f"q.rotary needs an even last axis, got {x}")
        expect(self.plan.cos.shape == self.plan.sin.shape, "q.rotary cos and sin tables differ")
        broadcast(x.shape, tuple(self.plan.cos.shape))
        return x.shape


@register_op
@dataclass(frozen=True, eq=False)
class QSoftmax(QOp):
    """Softmax over the last axis (optional bool mask); codes in [0, out_max], scale 1/out_max."""

    NAME = "q.softmax"
    MIN_INPUTS = 1
    MAX_INPUTS = 2
    plan: SoftmaxPlan

    def shape(self, inputs: tuple[TensorType, ...]) -> tuple[int, ...]:
        _table_of_256(self.plan.exp_hi, "q.softmax exp_hi")
        _table_of_256(self.plan.exp_lo, "q.softmax exp_lo")
        if len(inputs) == 2:
            expect_dtype(inputs[1], (DType.BOOL,), "q.softmax mask")
            broadcast(inputs[1].shape, inputs[0].shape)
        return inputs[0].shape


@register_op
@dataclass(frozen=True, eq=False)
class QAttention(QOp, RunTimeMacroOperands):
    """Fused attention of int8 q, k, v (GQA, causal and bool mask in the plan / operand 3)."""

    NAME = "q.attention"
    MIN_INPUTS = 3
    MAX_INPUTS = 5
    INT8_OPERANDS = CODE_OPERANDS = (0, 1, 2)
    plan: AttentionPlan
    bias: bool = False  # the last operand: int16 codes at the logits' step, added to them

    def mask_index(self, n_inputs: int) -> int | None:
        return attention_mask_index(self.bias, n_inputs)

    def attributes(self) -> dict[str, Any]:
        return attention_attributes(super().attributes())

    def macro_operands(self, inputs: tuple[TensorType, ...]) -> tuple[tuple[int, int], ...]:
        """K^T [D x Sk] and V [Sk x Dv] of one head."""
        d, keys, dv = inputs[0].shape[-1], inputs[1].shape[-2], inputs[2].shape[-1]
        return ((d, keys), (keys, dv))

    def shape(self, inputs: tuple[TensorType, ...]) -> tuple[int, ...]:
        q, k, v = inputs[:3]
        _table_of_256(self.plan.exp_hi, "q.attention exp_hi")
        _table_of_256(self.plan.exp_lo, "q.attention exp_lo")
        expect(q.rank == k.rank == v.rank == 4, "q.attention operands must be [B, H, S, D]")
        expect(q.shape[1] % k.shape[1] == 0, f"{q.shape[1]} query heads vs {k.shape[1]} kv")
        expect(q.shape[-1] == k.shape[-1] and k.shape[2] == v.shape[2], "q.attention dims")
        m = self.mask_index(len(inputs))
        if m is not None:
            expect_dtype(inputs[m], (DType.BOOL,), "q.attention mask")
            broadcast(inputs[m].shape, (*q.shape[:3], k.shape[2]))
        if self.bias:
            expect_dtype(inputs[-1], (DType.I16,), "q.attention bias")
            expect(inputs[-1].rank <= 4, "q.attention bias has at most 4 axes")
            broadcast(inputs[-1].shape, (*q.shape[:3], k.shape[2]))
        return (*q.shape[:3], v.shape[3])


@dataclass(frozen=True, eq=False)
class _QNorm(QOp):
    MIN_INPUTS = MAX_INPUTS = 1
    RMS: ClassVar[bool] = False
    plan: NormPlan

    def shape(self, inputs: tuple[TensorType, ...]) -> tuple[int, ...]:
        x = inputs[0]
        expect(self.plan.rms == self.RMS, f"{self.NAME} holds the wrong normalization plan")
        expect(x.shape[-1] == self.plan.n, f"{self.NAME} plan is for {self.plan.n} channels")
        n = (self.plan.n,)
        expect(self.plan.gain.shape == self.plan.bias.shape == n, f"{self.NAME} gain/bias")
        return x.shape


@register_op
@dataclass(frozen=True, eq=False)
class QLayerNorm(_QNorm):
    """layer_norm over the last axis by exact centering, ISQRT and one DIV per row."""

    NAME = "q.layer_norm"


@register_op
@dataclass(frozen=True, eq=False)
class QRmsNorm(_QNorm):
    """rms_norm over the last axis (as q.layer_norm without centering)."""

    NAME = "q.rms_norm"
    RMS = True


Q_OPS: tuple[type[QOp], ...] = (
    QQuantize,
    QConstant,
    QRequant,
    QLinear,
    QMatMul,
    QAdd,
    QMul,
    QLut,
    QReduce,
    QEmbedding,
    QRotary,
    QSoftmax,
    QAttention,
    QLayerNorm,
    QRmsNorm,
)
