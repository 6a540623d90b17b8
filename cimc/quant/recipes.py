"""Integer recipes of the canonical ops: the run-time half of the quantized model.

Each recipe takes int64 torch tensors of codes plus its plan (cimc.quant.plans) and uses
only the primitives of cimc.quant.intops (RSHR, REQ, DIV, ISQRT, LUT8, RSUM, RMAX, exact
matmul) and integer add/sub/mul/compare/select. No float arithmetic at run time.
Codes: real = code * scale, symmetric; int8 in [-127, 127], int16 in [-32767, 32767].

Design note (integer steps; "acc" = exact integer accumulator):
- linear     acc = x_i8 @ W_i8 + bias_i32 (int32, K*127*128 + |bias| < 2^31 proven;
             W per output channel in [-127, 127], bias = rint(b / (s_x * s_w[n])));
             y = REQ(acc, M[n], s[n], 0, lo, hi) per output channel (product int64).
- matmul     acc = a_i8 @ b_i8 (int32); y = REQ(acc, M, s) per tensor.
- add/sub    t = a*Ma + b*Mb (int64, one shared shift, |M| < 2^31); y = clamp(RSHR(t, s)).
             One rounding: error <= 1/2 output step + 2^-30 relative.
- mul        y = REQ(a*b, M, s) (a*b < 2^31, product with M in int64).
- unary      y = LUT8(x_i8, T): gelu, gelu_tanh, silu, tanh, sigmoid, erf, exp, relu, neg,
             sqrt, or any callable.
             Input must be int8 (requantize int16 first); output int8 or int16 codes.
- ramp+lut   (gelu, gelu_tanh, silu of int16 x) y = clamp(REQ(max(x, 0), Mr, sr, 0, hi)
             + LUT8(REQ(x, Mi, si, -127, 127), T), lo, hi): the relu part exactly, and a
             table of f(x) - relu(x) at input step span/127 (span 4 for gelu, 8 for silu);
             the remainder vanishes outside the span. T has the output's width.
- embedding  y = T[ids], T pre-quantized at the output scale: no arithmetic.
- rescale    y = REQ(x, M, s) (scale / width change, e.g. int16 -> int8 before a LUT8).
- reduce     sum / mean / max: y = REQ(RSUM(x), M, s) (mean folds 1/n into M) or
             REQ(RMAX(x), M, s).
- rotary     t = x*C + rotate_half(x)*S with Q1.14 C, S (|t| < 2^31); y = REQ(t, M, s).
- softmax    (axis `dim`, default last; int8/int16 x; optional bool mask, True = allowed)
             m = RMAX(select(mask, x, -2^40)); a = clamp(select(mask, m - x, 0), 0, 65535);
             h = DIV(a, 256); l = a - 256*h;
             e = select(mask, RSHR(LUT8(h-128, EH) * LUT8(l-128, EL), 30), 0) with
             EH[j] = round(exp(-256*j*s_in) 2^30), EL[l] = round(exp(-l*s_in) 2^30)
             (int32 tables; product < 2^60 in int64; e in [0, 2^30], row max -> 2^30);
             S = RSUM(e) (int64); R = DIV(out_max * 2^46, max(S, 1)) (one per row);
             p = RSHR(e*R, 46) in [0, out_max] (e*R <= out_max*2^46), scale 1/out_max.
             Fully masked rows: every e = 0, so p = 0. out_max: 127, 255 or 32767.
- attention  per head (GQA: query head h uses kv head h // (Hq/Hkv)):
             acc = q_i8 @ k_i8^T (int32); x = REQ(acc) -> int16 logits (absmax -> 32767);
             mask = user mask AND causal (j <= i + Sk - Sq); e as in softmax;
             p' = RSHR(e * p_max, 30) in [0, p_max] (unnormalized, row max -> p_max);
             S = RSUM(p'); R = DIV(Mv << b, max(S, 1)) (one per row, Mv/2^sv ~ s_v/s_out);
             acc = p' @ v_i8 (exact; p_max = 16383: p' = 128*hi + lo, two int8 MVM passes
             combined in int64; p_max = 127: one pass); y = clamp(RSHR(acc*R, b + sv)).
             |acc*R| <= 128 * Mv * 2^b < 2^62. Fully masked rows: p' = 0, so y = 0.
- layer_norm c = n*x - RSUM(x), V = n*RSUM(x*x) - RSUM(x)^2 (exact; c/sqrt(V) is the
  rms_norm    normalized value); rms_norm: c = n*x, V = n*RSUM(x*x).
             V' = V + E (E = eps*n^2/in_scale^2, rounded); r = ISQRT(V' << 2k) (< 2^31);
             inv = DIV(2^P, max(r, 1)) (one per row); u = RSHR(c*inv, P-k-16) (Q.16,
             |c*inv| < 2^63 proven); y = clamp(RSHR(u*G[ch] + B[ch], s)) with G = gamma
             and B = beta folded into per-channel integers at one shift s.
Widths the backend needs (worst cases proven by the plans):
- int64: REQ products x*M, add's t, EH*EL, e*R and the row sums S and reciprocals R of
  softmax/attention, e*p_max, p' @ v when p_max = 16383 (the two passes' combination),
  acc*R, norm sums RSUM(x), RSUM(x*x), V, r << 2k, c*inv, u*G + B, the norm bias B.
- int32: int8 matmul accumulators (each MVM pass), linear bias, multipliers M and G,
  rotary t, mul products, the exp tables, e (<= 2^30), u (|u| <= 2^(17 + ceil(log2(n)/2))).
- int16: activation codes (residual stream), attention logits, Q1.14 rotary tables,
  LUT8 tables with int16 outputs. uint8/int16 softmax codes when out_max is 255/32767.
"""

from __future__ import annotations

import numpy as np
import torch

from cimc.errors import CimcError
from cimc.quant import intops as io
from cimc.quant.constants import Requant
from cimc.quant.plans import (
    RECIP_BITS,
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
    RescalePlan,
    RotaryPlan,
    SoftmaxPlan,
)
from cimc.quant.tables import EXP_FRAC_BITS

MASKED = -(1 << 40)  # below every code: excluded rows of RMAX


def _t(a: np.ndarray | int) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.int64))


def _check_codes(x: torch.Tensor, bits: int, what: str) -> None:
    """Internal contract: operands hold codes of the declared width (a quantizer bug if not)."""
    lim = 1 << (bits - 1)
    if x.dtype != torch.int64:
        raise TypeError(f"{what}: recipes take int64 tensors, got {x.dtype}")
    if x.numel() and (int(x.min()) < -lim or int(x.max()) >= lim):
        raise ValueError(f"{what}: codes outside the int{bits} range")


def requant(x: torch.Tensor, rq: Requant) -> torch.Tensor:
    return io.req(x, _t(rq.mult), _t(rq.shift), 0, rq.lo, rq.hi)


def linear(x: torch.Tensor, plan: LinearPlan) -> torch.Tensor:
    _check_codes(x, 8, "linear input")
    acc = io.imatmul(x, _t(plan.effective_weight())) + _t(plan.bias)
    return requant(acc, plan.requant)


def masked_linear(x: torch.Tensor, mask: torch.Tensor, plan: LinearPlan) -> torch.Tensor:
    """linear(x), forced to code 0 where the predictor's mask is 0."""
    return torch.where(mask != 0, linear(x, plan), torch.zeros((), dtype=torch.int64))


def matmul(a: torch.Tensor, b: torch.Tensor, plan: MatmulPlan) -> torch.Tensor:
    _check_codes(a, 8, "matmul lhs")
    _check_codes(b, 8, "matmul rhs")
    return requant(io.imatmul(a, b), plan.requant)


def add(a: torch.Tensor, b: torch.Tensor, plan: AddPlan) -> torch.Tensor:
    _check_codes(a, 16, "add lhs")
    _check_codes(b, 16, "add rhs")
    t = a * plan.mult_a + b * plan.mult_b
    return io.clamp(io.rshr(t, plan.shift), plan.lo, plan.hi)


def mul(a: torch.Tensor, b: torch.Tensor, plan: MulPlan) -> torch.Tensor:
    _check_codes(a, 16, "mul lhs")
    _check_codes(b, 16, "mul rhs")
    return requant(a * b, plan.requant)


def unary(x: torch.Tensor, plan: LutPlan) -> torch.Tensor:
    _check_codes(x, 8, "LUT8 input")
    return io.lut8(x, _t(plan.table))


def ramp_unary(x: torch.Tensor, plan: RampLutPlan) -> torch.Tensor:
    """f(x) = relu part + LUT8 of the remainder at a finer input step (int16 x)."""
    _check_codes(x, 16, "ramp + table input")
    ramp = requant(torch.clamp(x, min=0), plan.ramp)
    index = requant(x, plan.index)
    return io.clamp(ramp + io.lut8(index, _t(plan.table)), plan.lo, plan.hi)


def rescale(x: torch.Tensor, plan: RescalePlan) -> torch.Tensor:
    _check_codes(x, 32, "rescale input")
    return requant(x, plan.requant)


def reduce(x: torch.Tensor, plan: ReducePlan, dims: tuple[int, ...], keepdim: bool) -> torch.Tensor:
    """reduce_sum / reduce_mean / reduce_max over `dims`, then one REQ."""
    _check_codes(x, 16, "reduction input")
    out = x
    for d in sorted((d % x.ndim for d in dims), reverse=True):
        out = io.rmax(out, d, keepdim) if plan.kind == "max" else io.rsum(out, d, keepdim)
    return requant(out, plan.requant)


def embedding(ids: torch.Tensor, plan: EmbeddingPlan) -> torch.Tensor:
    vocab = plan.table.shape[0]
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        raise CimcError(f"token id outside the vocabulary [0, {vocab})", "embedding")
    return _t(plan.table)[ids]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """HF convention: cat(-x[..., D/2:], x[..., :D/2])."""
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def rotary(x: torch.Tensor, plan: RotaryPlan) -> torch.Tensor:
    _check_codes(x, 16, "rotary input")
    t = x * _t(plan.cos) + rotate_half(x) * _t(plan.sin)
    return requant(t, plan.requant)


def _exp_below_max(
    x: torch.Tensor, allowed: torch.Tensor, exp_hi: np.ndarray, exp_lo: np.ndarray
) -> torch.Tensor:
    """exp(x - rowmax) * 2^30 over allowed positions (0 elsewhere), int64 in [0, 2^30]."""
    top = io.rmax(torch.where(allowed, x, torch.full_like(x, MASKED)))
    zero = torch.zeros_like(x)
    a = io.clamp(torch.where(allowed, top - x, zero), 0, 65535)  # input steps below the max
    hi = io.div_floor(a, 256)
    lo = a - 256 * hi
    prod = io.lut8(hi - 128, _t(exp_hi)) * io.lut8(lo - 128, _t(exp_lo))
    return torch.where(allowed, io.rshr(prod, EXP_FRAC_BITS), zero)


def softmax(
    x: torch.Tensor, plan: SoftmaxPlan, mask: torch.Tensor | None = None, dim: int = -1
) -> torch.Tensor:
    """Masked softmax over `dim`; codes in [0, out_max] at scale 1/out_max."""
    _check_codes(x, 16, "softmax input")
    allowed = torch.ones_like(x, dtype=torch.bool) if mask is None else mask.expand(x.shape)
    x, allowed = x.movedim(dim, -1), allowed.movedim(dim, -1)
    e = _exp_below_max(x, allowed, plan.exp_hi, plan.exp_lo)
    total = io.rsum(e)
    recip = io.div_floor(torch.full_like(total, plan.out_max << RECIP_BITS), total.clamp(min=1))
    return io.rshr(e * recip, RECIP_BITS).movedim(-1, dim)


def _allowed(q_len: int, k_len: int, causal: bool, mask: torch.Tensor | None) -> torch.Tensor:
    ok = torch.ones(q_len, k_len, dtype=torch.bool)
    if causal:
        ok = torch.tril(ok, diagonal=k_len - q_len)
    return ok if mask is None else ok & mask.to(torch.bool)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: AttentionPlan,
    mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """q [B, Hq, Sq, D], k [B, Hkv, Sk, D], v [B, Hkv, Sk, Dv], int8 codes; mask bool;
    bias int16 codes at the logits' step, added to them with the logits' clamp."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_codes(t, 8, f"attention {name}")
    if q.shape[1] % k.shape[1] or k.shape[1] != v.shape[1]:
        raise ValueError(f"attention heads: Hq={q.shape[1]} is not a multiple of Hkv={k.shape[1]}")
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    logits = requant(io.imatmul(q, k.transpose(-1, -2)), plan.logits)
    if bias is not None:
        _check_codes(bias, 16, "attention bias")
        logits = io.clamp(logits + bias, plan.logits.lo, plan.logits.hi)
    allowed = _allowed(q.shape[-2], k.shape[-2], plan.causal, mask).expand(logits.shape)
    e = _exp_below_max(logits, allowed, plan.exp_hi, plan.exp_lo)
    p = io.rshr(e * plan.p_max, EXP_FRAC_BITS)  # unnormalized, row max -> p_max
    total = io.rsum(p)
    recip = io.div_floor(
        torch.full_like(total, plan.out_mult << plan.recip_bits), total.clamp(min=1)
    )
    acc = io.imatmul(p, v)  # exact; the backend splits p' into int8 MVM passes
    return io.clamp(io.rshr(acc * recip, plan.out_shift), plan.lo, plan.hi)


def norm(x: torch.Tensor, plan: NormPlan) -> torch.Tensor:
    """layer_norm / rms_norm over the last axis by exact centering (see the design note)."""
    _check_codes(x, 16, "normalization input")
    if x.shape[-1] != plan.n:
        raise ValueError(f"normalization expects {plan.n} channels, got {x.shape[-1]}")
    s1 = io.rsum(x)
    s2 = io.rsum(x * x)
    if plan.rms:
        c, v = plan.n * x, plan.n * s2
    else:
        c, v = plan.n * x - s1, plan.n * s2 - s1 * s1
    r = io.isqrt(torch.bitwise_left_shift(v + plan.eps_codes, 2 * plan.pre_shift))
    inv = io.div_floor(torch.full_like(r, 1 << plan.recip_bits), r.clamp(min=1))
    u = io.rshr(c * inv, plan.u_shift)
    y = io.rshr(u * _t(plan.gain) + _t(plan.bias), plan.shift)
    return io.clamp(y, plan.lo, plan.hi)
