"""Plans: the integer constants of each recipe, computed once at compile time.

`plan_<op>(float parameters, scales, ...)` returns a frozen dataclass of integers (numpy)
that `cimc.quant.recipes.<op>` consumes at run time. Each plan also proves, from worst-case
operand ranges, that every intermediate of its recipe fits the integer type the backend
will use (int32 accumulators, int64 products), and raises CimcError when it cannot.
Scales are float64 "real = code * scale"; see constants.py for the conventions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from cimc.errors import CimcError
from cimc.ir.op_base import quiet
from cimc.quant import constants as qc
from cimc.quant import tables
from cimc.quant.plan_arrays import (
    CodeMatrix,
    CodeVector,
    Int8Matrix,
    Int16Matrix,
    Int32Matrix,
    Int32Vector,
    Int64Vector,
)
from cimc.quant.weight_groups import expand_rows, group_count, quantize_weight_groups

RECIP_BITS = 46  # softmax: R = floor(out_max * 2^46 / sum)
NORM_FRAC_BITS = 16  # normalization: u = c / sqrt(V') in Q.16


def _in_abs(bits: int) -> int:
    """Worst-case |code| of an input: recipes accept the full two's-complement range."""
    return qc.qmax(bits) + 1


# ---------------------------------------------------------------- linear / matmul
@dataclass(frozen=True)
class LinearPlan:
    weight: Int8Matrix  # int8 [K, N], per-output-channel codes
    bias: Int32Vector  # int32 [N] at scale x_scale * w_scale[n] (zeros when absent)
    requant: qc.Requant  # per channel: acc -> output codes
    weight_bits: int = quiet(8)  # 4: codes in [-7, 7], packed two a cell on the machine
    group_size: int = quiet(0)  # > 0: group-wise scales (cimc/quant/weight_groups.py)
    group_mult: Int32Matrix = quiet(factory=lambda: np.zeros((0, 0), np.int32))  # [G, N]

    def __post_init__(self) -> None:
        if self.weight_bits not in (4, 8):
            raise CimcError(f"LinearPlan.weight_bits must be 4 or 8, got {self.weight_bits}")
        top = (1 << (self.weight_bits - 1)) - 1
        if self.weight.size and int(np.abs(self.weight.astype(np.int64)).max()) > top:
            raise CimcError(f"LinearPlan weight codes exceed {self.weight_bits} bits")
        k, n = self.weight.shape
        want = (group_count(k, self.group_size), n) if self.group_size > 0 else (0, 0)
        if self.group_size < 0 or self.group_mult.shape != want:
            raise CimcError(
                f"LinearPlan.group_mult must be {list(want)} for group size {self.group_size}"
            )

    def effective_weight(self) -> np.ndarray:
        """The integer weight the recipe multiplies by: the codes, times each group's
        multiplier under group-wise scales (int64)."""
        w = self.weight.astype(np.int64)
        if self.group_size == 0:
            return w
        return w * expand_rows(self.group_mult.astype(np.int64), w.shape[0], self.group_size)


def plan_linear(
    w: np.ndarray,
    b: np.ndarray | None,
    x_scale: float,
    out_scale: float,
    out_bits: int,
    loc: str | None = None,
    weight_bits: int = 8,
    group_size: int = 0,
) -> LinearPlan:
    """y = x @ w + b with int8 x [..., K], w [K, N] float, b [N] float or None; the
    weight in `weight_bits`-bit codes, scaled per channel or (`group_size` > 0) per group
    of that many rows and channel."""
    if w.ndim != 2:
        raise CimcError(f"linear weight must be [K, N], got shape {w.shape}", loc)
    k, n = w.shape
    bias = np.zeros(n, np.float64) if b is None else np.asarray(b, np.float64)
    if group_size > 0:
        return _plan_grouped(w, bias, x_scale, out_scale, out_bits, loc, weight_bits, group_size)
    wq = qc.quantize_weight_per_channel(w, axis=1, loc=loc, bits=weight_bits)
    bq = qc.quantize_bias(bias, x_scale, wq.scale, loc)
    acc_bound = k * 128 * 127 + int(np.abs(bq.astype(np.int64)).max(initial=0))
    qc.check_int32_bound(acc_bound, "linear accumulator", loc)
    rq = qc.requant_per_channel(x_scale * wq.scale / out_scale, out_bits, loc)
    return LinearPlan(weight=wq.codes, bias=bq, requant=rq, weight_bits=weight_bits)


def _plan_grouped(
    w: np.ndarray,
    bias: np.ndarray,
    x_scale: float,
    out_scale: float,
    out_bits: int,
    loc: str | None,
    weight_bits: int,
    group: int,
) -> LinearPlan:
    gq = quantize_weight_groups(w, bias, x_scale, group, weight_bits, loc)
    rq = qc.requant_per_channel(x_scale * gq.scale / out_scale, out_bits, loc)
    return LinearPlan(gq.codes, gq.bias, rq, weight_bits, group, gq.mult)


@dataclass(frozen=True)
class MatmulPlan:
    requant: qc.Requant  # per tensor: acc -> output codes


def plan_matmul(
    a_scale: float,
    b_scale: float,
    out_scale: float,
    out_bits: int,
    k: int,
    a_bits: int = 8,
    b_bits: int = 8,
    loc: str | None = None,
) -> MatmulPlan:
    """y = a @ b of two run-time int8 operands, reduction length k."""
    qc.check_int32_bound(k * _in_abs(a_bits) * _in_abs(b_bits), "matmul accumulator", loc)
    return MatmulPlan(qc.requant_per_tensor(a_scale * b_scale / out_scale, out_bits, loc))


# ---------------------------------------------------------------- elementwise
@dataclass(frozen=True)
class AddPlan:
    """y = clamp(RSHR(a * mult_a + b * mult_b, shift), lo, hi): one rounding."""

    mult_a: int
    mult_b: int
    shift: int
    lo: int
    hi: int


def plan_add(
    a_scale: float,
    b_scale: float,
    out_scale: float,
    out_bits: int,
    subtract: bool = False,
    loc: str | None = None,
) -> AddPlan:
    """Requantized a + b (or a - b) with different input scales, e.g. the residual add."""
    sign = -1.0 if subtract else 1.0
    ratios = np.array([a_scale / out_scale, sign * b_scale / out_scale])
    mult, shift = qc.shared_shift_multipliers(ratios, loc)
    bound = (1 << 15) * (abs(int(mult[0])) + abs(int(mult[1])))  # int16 inputs at worst
    qc.check_int64_bound(bound, "add intermediate", loc)
    lo, hi = qc.qrange(out_bits)
    return AddPlan(int(mult[0]), int(mult[1]), shift, lo, hi)


@dataclass(frozen=True)
class MulPlan:
    requant: qc.Requant  # per tensor: a * b -> output codes


def plan_mul(
    a_scale: float, b_scale: float, out_scale: float, out_bits: int, loc: str | None = None
) -> MulPlan:
    """Requantized elementwise a * b (int8 or int16 operands; product < 2^31)."""
    return MulPlan(qc.requant_per_tensor(a_scale * b_scale / out_scale, out_bits, loc))


@dataclass(frozen=True)
class LutPlan:
    table: CodeVector  # [256] output codes (int8 or int16), entry c + 128 for input c


def plan_unary(
    fn: str | Callable[[float], float],
    in_scale: float,
    out_scale: float,
    out_bits: int,
    loc: str | None = None,
) -> LutPlan:
    """Any elementwise function of an int8 input: a name from tables.UNARY_FUNCTIONS
    (gelu, gelu_tanh, silu, tanh, sigmoid, erf, exp, relu, neg, sqrt) or a float callable
    (e.g. x ** 3 for `pow`), whose table is only as machine independent as the callable."""
    return LutPlan(tables.lut8_table(fn, in_scale, out_scale, out_bits, loc))


@dataclass(frozen=True)
class RampLutPlan:
    """y = clamp(REQ(max(x, 0), ramp) + T[REQ(x, index) + 128], lo, hi) for int16 x."""

    ramp: qc.Requant  # max(x, 0) -> output codes (the relu part of f)
    index: qc.Requant  # x -> table index codes in [-127, 127] (step RAMP_SPAN[fn] / 127)
    table: CodeVector  # [256] output codes of f(x) - relu(x) at the index grid
    lo: int
    hi: int


# Functions f with f(x) - relu(x) -> 0 on both sides, and the input span beyond which the
# remainder is below 2^-12 (gelu), or small against the table's own step (silu).
RAMP_SPAN: dict[str, float] = {"gelu": 4.0, "gelu_tanh": 4.0, "silu": 8.0}


def plan_ramp_unary(
    fn: str, in_scale: float, out_scale: float, out_bits: int, loc: str | None = None
) -> RampLutPlan:
    """f of an int16 input as its relu part (one REQ, exact) plus a table of the remainder
    f(x) - relu(x) over [-span, span] (or the input's own range when smaller): the table's
    input step is span / 127 instead of the whole input range / 127 of a LUT8."""
    if fn not in RAMP_SPAN:
        raise CimcError(f"no ramp + table recipe for {fn!r}; known: {sorted(RAMP_SPAN)}", loc)
    step = min(RAMP_SPAN[fn], in_scale * qc.qmax(16)) / 127
    lo, hi = qc.qrange(out_bits)
    ramp = qc.requant_per_tensor(in_scale / out_scale, out_bits, loc)
    ramp = qc.Requant(ramp.mult, ramp.shift, 0, hi)
    index = qc.requant_per_tensor(in_scale / step, 8, loc)
    table = tables.lut8_table(tables.remainder_of_relu(fn), step, out_scale, out_bits, loc)
    return RampLutPlan(ramp, index, table, lo, hi)


@dataclass(frozen=True)
class RescalePlan:
    requant: qc.Requant  # per tensor: x -> codes at another scale / width


def plan_rescale(
    in_scale: float, out_scale: float, out_bits: int, loc: str | None = None
) -> RescalePlan:
    """Change of scale or width (int16 residual -> int8 LUT input, concat operands, ...)."""
    return RescalePlan(qc.requant_per_tensor(in_scale / out_scale, out_bits, loc))


@dataclass(frozen=True)
class ReducePlan:
    kind: str  # "sum", "mean" or "max"
    requant: qc.Requant  # RSUM / RMAX result -> output codes (mean folds 1/n in)


REDUCE_KINDS = ("sum", "mean", "max")


def plan_reduce(
    kind: str, n: int, in_scale: float, out_scale: float, out_bits: int, loc: str | None = None
) -> ReducePlan:
    """reduce_sum / reduce_mean / reduce_max over n elements of int8/int16 codes."""
    if kind not in REDUCE_KINDS:
        raise CimcError(f"unknown reduction {kind!r}; use one of {REDUCE_KINDS}", loc)
    qc.check_int64_bound(n * (1 << 15) * (1 << 31), "reduction intermediate", loc)
    ratio = in_scale / out_scale / (n if kind == "mean" else 1)
    return ReducePlan(kind, qc.requant_per_tensor(ratio, out_bits, loc))


@dataclass(frozen=True)
class RotaryPlan:
    cos: Int16Matrix  # int16 Q1.14 [S, D]
    sin: Int16Matrix  # int16 Q1.14 [S, D]
    requant: qc.Requant  # x*cos + rot(x)*sin (scale in_scale * 2^-14) -> output codes


def plan_rotary(
    cos: np.ndarray,
    sin: np.ndarray,
    in_scale: float,
    out_scale: float,
    out_bits: int,
    loc: str | None = None,
) -> RotaryPlan:
    """RoPE from the model's float cos/sin tables ([S, D], HF layout), int8/int16 x."""
    ratio = in_scale / (out_scale * (1 << tables.ROPE_FRAC_BITS))
    rq = qc.requant_per_tensor(ratio, out_bits, loc)
    return RotaryPlan(tables.rope_q14(cos), tables.rope_q14(sin), rq)


@dataclass(frozen=True)
class EmbeddingPlan:
    table: CodeMatrix  # [V, D] codes at the output activation scale (int8 or int16)


def plan_embedding(
    table: np.ndarray, out_scale: float, out_bits: int, loc: str | None = None
) -> EmbeddingPlan:
    """The table is stored pre-quantized at the output scale: the lookup does no arithmetic."""
    if table.ndim != 2:
        raise CimcError(f"embedding table must be [V, D], got shape {table.shape}", loc)
    return EmbeddingPlan(qc.quantize_tensor(table, out_scale, out_bits))


# ---------------------------------------------------------------- softmax / attention
@dataclass(frozen=True)
class SoftmaxPlan:
    exp_hi: Int32Vector  # int32 [256]: exp(-256 j step) * 2^30
    exp_lo: Int32Vector  # int32 [256]: exp(-l step) * 2^30
    out_max: int  # output codes in [0, out_max], scale 1 / out_max


SOFTMAX_OUT_MAX = (127, 255, 32767)


def plan_softmax(in_scale: float, out_max: int = 127, loc: str | None = None) -> SoftmaxPlan:
    """Softmax over the last axis of int8/int16 codes at `in_scale` (the table step).

    Output codes p in [0, out_max] at scale 1/out_max: 127 (int8), 255 (uint8 range) or
    32767 (int16), whichever the consumer takes.
    """
    if out_max not in SOFTMAX_OUT_MAX:
        raise CimcError(f"softmax out_max must be one of {SOFTMAX_OUT_MAX}, got {out_max}", loc)
    hi, lo = tables.exp_tables(in_scale, loc)
    return SoftmaxPlan(hi, lo, out_max)


@dataclass(frozen=True)
class AttentionPlan:
    """Constants of the fused attention recipe (deferred softmax normalization)."""

    logits: qc.Requant  # q @ k^T acc -> int16 logits at the exp tables' step
    exp_hi: Int32Vector  # int32 [256], as in SoftmaxPlan
    exp_lo: Int32Vector  # int32 [256]
    p_max: int  # unnormalized weights p' = round(p_max * exp(x - rowmax)) in [0, p_max]
    out_mult: int  # R = DIV(out_mult << recip_bits, max(sum p', 1)) per row
    recip_bits: int
    out_shift: int  # y = clamp(RSHR((p' @ v) * R, out_shift), lo, hi)
    lo: int
    hi: int
    causal: bool


ATTN_P_BITS = (7, 14)


def attention_logit_step(logit_absmax: float, loc: str | None = None) -> float:
    """The scale of attention's int16 logits (and of an additive bias's codes)."""
    return qc.activation_scale(logit_absmax, 16, loc)


def plan_attention(
    q_scale: float,
    k_scale: float,
    v_scale: float,
    scale: float,
    out_scale: float,
    out_bits: int,
    head_dim: int,
    logit_absmax: float,
    causal: bool = False,
    p_bits: int = 14,
    loc: str | None = None,
) -> AttentionPlan:
    """softmax(q k^T * scale + mask) v with int8 q, k, v, int16 logits.

    `logit_absmax` is the calibrated max |q k^T * scale|; it maps to the int16 code 32767.
    The attention weights stay unnormalized (p' <= p_max = 2^p_bits - 1, the row max
    gets p_max) and the row sum divides once, after p' @ v. p_bits = 7: one int8 MVM pass;
    p_bits = 14: p' = 128*hi + lo with hi, lo in [0, 127], two int8 MVM passes.
    """
    if p_bits not in ATTN_P_BITS:
        raise CimcError(f"attention p_bits must be one of {ATTN_P_BITS}, got {p_bits}", loc)
    qc.check_int32_bound(head_dim * 128 * 128, "attention q.k accumulator", loc)
    step = attention_logit_step(logit_absmax, loc)
    logits = qc.requant_per_tensor(q_scale * k_scale * scale / step, 16, loc)
    hi, lo = tables.exp_tables(step, loc)
    mult, v_shift = qc.quantize_multiplier(v_scale / out_scale, loc)
    # |p' @ v| <= sum(p') * 128, so |acc * R| <= 128 * mult * 2^recip_bits < 2^(38 + bits)
    recip_bits = min(24, qc.MAX_SHIFT - v_shift)
    if recip_bits < 8:
        raise CimcError("attention output scale is too large for its value scale", loc)
    out_lo, out_hi = qc.qrange(out_bits)
    return AttentionPlan(
        logits,
        hi,
        lo,
        (1 << p_bits) - 1,
        mult,
        recip_bits,
        recip_bits + v_shift,
        out_lo,
        out_hi,
        causal,
    )


# ---------------------------------------------------------------- normalization
@dataclass(frozen=True)
class NormPlan:
    """Constants of layer_norm / rms_norm over the last axis (length n)."""

    n: int
    rms: bool
    eps_codes: int  # E = round(eps * n^2 / in_scale^2), added to V
    pre_shift: int  # k: r = ISQRT(V' << 2k), r < 2^31
    recip_bits: int  # P: inv = DIV(2^P, max(r, 1))
    u_shift: int  # u = RSHR(c * inv, P - k - 16): c / sqrt(V') in Q.16
    gain: Int64Vector  # int64 [n]: gamma / out_scale in Q.(shift + 16), signed
    bias: Int64Vector  # int64 [n]: beta / out_scale in Q.shift
    shift: int  # y = clamp(RSHR(u * gain + bias, shift), lo, hi)
    lo: int
    hi: int


def plan_norm(
    gamma: np.ndarray,
    beta: np.ndarray | None,
    eps: float,
    in_scale: float,
    in_bits: int,
    out_scale: float,
    out_bits: int,
    rms: bool = False,
    loc: str | None = None,
) -> NormPlan:
    """layer_norm (rms=False, beta given) or rms_norm (rms=True, no beta) by exact centering.

    With c = n*x - sum(x) (layer_norm) or n*x (rms_norm) and V = n*sum(x^2) - sum(x)^2
    (or n*sum(x^2)), the normalized value is exactly c / sqrt(V + eps*n^2/in_scale^2).
    """
    g = np.asarray(gamma, np.float64).ravel()
    n = g.size
    bt = np.zeros(n) if beta is None else np.asarray(beta, np.float64).ravel()
    if n < 1 or bt.size != n:
        raise CimcError("normalization gamma/beta must be [C] vectors of equal length", loc)
    eps_codes = qc.round_half_even(Fraction(eps) * n * n / Fraction(in_scale) ** 2)
    v_bound = n * n * _in_abs(in_bits) ** 2 + eps_codes
    qc.check_int64_bound(v_bound << 1, "normalization variance", loc)
    pre = max(0, (62 - v_bound.bit_length()) // 2)
    half_log_n = math.ceil(math.log2(n) / 2) if n > 1 else 0
    recip = min(62, 61 + pre - half_log_n)  # keeps |c * inv| < 2^63 (see recipes)
    u_shift = recip - pre - NORM_FRAC_BITS
    if u_shift < 1:
        raise CimcError(f"normalization over {n} channels is too wide", loc)
    gain, shift = qc.shared_shift_multipliers(g / out_scale / (1 << NORM_FRAC_BITS), loc)
    bias = np.array(
        [qc.round_half_even(Fraction(float(v)) * (1 << shift)) for v in bt / out_scale], np.int64
    )
    u_bound = (1 << (NORM_FRAC_BITS + half_log_n + 1)) + 1
    bound = u_bound * int(np.abs(gain).max()) + int(np.abs(bias).max())
    qc.check_int64_bound(bound, "normalization output", loc)
    lo, hi = qc.qrange(out_bits)
    return NormPlan(n, rms, eps_codes, pre, recip, u_shift, gain, bias, shift, lo, hi)
