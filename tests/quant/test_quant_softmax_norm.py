"""Softmax, attention and normalization recipes vs float, with stated error bounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cimc.errors import CimcError
from cimc.quant import constants as qc
from cimc.quant import plans, recipes

# Per-element softmax bound, in output steps: the final RSHR (1/2) plus the exp tables
# (<= 1.6 * 2^-30 of the row max per term), the row sum and the reciprocal's floor (2^-16).
SOFTMAX_STEPS = 0.5 + 0.01


def f64(x: torch.Tensor, scale: float) -> np.ndarray:
    return x.numpy().astype(np.float64) * scale


def float_softmax(x: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(np.where(allowed, x, -np.inf))
    p = torch.softmax(t, dim=-1).nan_to_num(0.0)  # fully masked rows -> 0
    return p.numpy()


@pytest.mark.parametrize(("bits", "out_max"), [(8, 127), (8, 255), (16, 127), (16, 32767)])
def test_softmax_masked_within_bound(quant, rng, bits: int, out_max: int) -> None:
    x = rng.normal(0, 4, (6, 10, 96))
    allowed = rng.random((6, 10, 96)) < 0.7
    allowed[0, 0] = False  # a fully masked row
    allowed[1, 1] = False
    allowed[1, 1, 5] = True  # a single allowed key
    sx = quant.scale_for(x, bits)
    xq = quant.codes(x, sx, bits)
    plan = plans.plan_softmax(sx, out_max)
    p = recipes.softmax(xq, plan, torch.from_numpy(allowed))
    ref = float_softmax(f64(xq, sx), allowed)
    assert np.abs(p.numpy() - ref * out_max).max() <= SOFTMAX_STEPS
    assert int(p.min()) >= 0 and int(p.max()) <= out_max
    assert not p.numpy()[~allowed].any()  # masked keys get exactly zero
    assert p[0, 0].eq(0).all() and p[1, 1, 5] == out_max
    assert torch.equal(p, recipes.softmax(xq, plan, torch.from_numpy(allowed)))


def test_softmax_over_another_axis(quant, rng) -> None:
    x = torch.from_numpy(rng.integers(-127, 128, (5, 7, 3)))
    plan = plans.plan_softmax(0.05, 255)
    p = recipes.softmax(x, plan, dim=1)
    assert torch.equal(p, recipes.softmax(x.transpose(1, 2), plan).transpose(1, 2))
    ref = torch.softmax(x.double() * 0.05, dim=1).numpy() * 255
    assert np.abs(p.numpy() - ref).max() <= SOFTMAX_STEPS


def test_softmax_without_mask_and_flat_rows(quant) -> None:
    x = torch.zeros(3, 4, dtype=torch.int64)  # flat rows: exactly uniform
    p = recipes.softmax(x, plans.plan_softmax(0.1, 127))
    assert p.tolist() == [[32] * 4] * 3  # 127 / 4 = 31.75 -> 32
    with pytest.raises(CimcError, match="out_max"):
        plans.plan_softmax(0.1, 100)
    p16 = recipes.softmax(x, plans.plan_softmax(0.1, 32767))
    assert p16.tolist() == [[8192] * 4] * 3  # 32767 / 4 = 8191.75


def float_attention(q, k, v, scale, allowed):
    group = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    logits = q @ np.swapaxes(k, -1, -2) * scale
    return float_softmax(logits, allowed) @ v, logits


@pytest.mark.parametrize("p_bits", [7, 14])
@pytest.mark.parametrize(("hq", "hkv", "causal"), [(4, 4, False), (4, 2, True), (6, 1, True)])
def test_attention_vs_float(quant, rng, hq: int, hkv: int, causal: bool, p_bits: int) -> None:
    b, sq, sk, d = 2, 12, 40, 32
    q, k = rng.normal(0, 1, (b, hq, sq, d)), rng.normal(0, 1, (b, hkv, sk, d))
    v = rng.normal(0, 1, (b, hkv, sk, d))
    pad = np.ones((b, 1, 1, sk), bool)
    pad[1, ..., -3:] = False  # padded keys of the second sequence
    (sq_, sk_, sv_) = (quant.scale_for(t, 8) for t in (q, k, v))
    qq, kq, vq = quant.codes(q, sq_, 8), quant.codes(k, sk_, 8), quant.codes(v, sv_, 8)
    allowed = pad & (np.tril(np.ones((sq, sk), bool), sk - sq) if causal else True)
    scale = d**-0.5
    ref, logits = float_attention(f64(qq, sq_), f64(kq, sk_), f64(vq, sv_), scale, allowed)
    s_out = np.abs(ref).max() / 127
    absmax = float(np.abs(logits).max())
    plan = plans.plan_attention(sq_, sk_, sv_, scale, s_out, 8, d, absmax, causal, p_bits)
    y = recipes.attention(qq, kq, vq, plan, torch.from_numpy(pad))
    err = np.abs(y.numpy() - ref / s_out)
    # Output = sum p'v / sum p' with |p' - p_max exp(x - max)| <= 1/2 (+2^-20), so the
    # weights move by at most sum_j 1/2 / sum p' * 2 <= Sk / p_max in total; the int16
    # logits' rounding (<= absmax/65534 each) moves them by at most 2x that, relatively.
    dw = sk / plan.p_max + 2 * absmax / 65534
    bound = 0.5 + dw * float(np.abs(f64(vq, sv_)).max()) / s_out
    assert err.max() <= bound
    if p_bits == 14:
        assert err.max() <= 0.6  # measured 0.50-0.52
    assert torch.equal(y, recipes.attention(qq, kq, vq, plan, torch.from_numpy(pad)))


def test_attention_fully_masked_rows_give_zeros(quant, rng) -> None:
    q = torch.from_numpy(rng.integers(-127, 128, (1, 2, 4, 8)))
    kv = torch.from_numpy(rng.integers(-127, 128, (1, 2, 5, 8)))
    mask = torch.ones(1, 1, 4, 5, dtype=torch.bool)
    mask[..., 2, :] = False
    plan = plans.plan_attention(0.01, 0.01, 0.01, 0.3, 0.01, 8, 8, 5.0)
    y = recipes.attention(q, kv, kv, plan, mask)
    assert y[..., 2, :].eq(0).all() and y[..., 0, :].ne(0).any()
    with pytest.raises(CimcError, match="p_bits"):
        plans.plan_attention(0.01, 0.01, 0.01, 0.3, 0.01, 8, 8, 5.0, p_bits=8)


def float_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float, rms: bool):
    if rms:
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * g + b


NORM_CASES = [(8, 64, 1e-5), (8, 768, 1e-12), (16, 768, 1e-5), (16, 4096, 1e-6)]


@pytest.mark.parametrize("rms", [False, True], ids=["layer_norm", "rms_norm"])
@pytest.mark.parametrize(("bits", "n", "eps"), NORM_CASES)
def test_norm_within_half_step(quant, rng, bits: int, n: int, eps: float, rms: bool) -> None:
    x = rng.normal(0.3, 2, (24, n))
    x[:, 3] *= 30  # residual-stream outlier channel
    x[0] = 0.5  # a constant row: only eps and beta matter
    x[1, : n // 2] *= 1e-3  # a tiny-variance half row
    g, b = rng.normal(1, 0.2, n), rng.normal(0, 0.2, n)
    g[7] = -g[7]
    sx = quant.scale_for(x, bits)
    xq = quant.codes(x, sx, bits)
    ref = float_norm(f64(xq, sx), g, b, eps, rms)
    sy = np.abs(ref).max() / 127
    plan = plans.plan_norm(g, None if rms else b, eps, sx, bits, sy, 8, rms=rms)
    y = recipes.norm(xq, plan)
    # final RSHR 1/2; ISQRT/DIV/u rounding keep c/sqrt(V') to ~2^-16 absolute (~0.01 step)
    assert quant.steps(y, sy, ref, 8).max() <= 0.5 + 0.01


def test_norm_plan_checks(rng) -> None:
    g = np.ones(8)
    with pytest.raises(CimcError, match="equal length"):
        plans.plan_norm(g, np.ones(7), 1e-5, 0.1, 8, 0.1, 8)
    plan = plans.plan_norm(g, np.zeros(8), 1e-5, 0.1, 8, 0.1, 8)
    with pytest.raises(ValueError, match="channels"):
        recipes.norm(torch.zeros(2, 9, dtype=torch.int64), plan)


def test_recipes_are_deterministic(quant, rng) -> None:
    x = rng.normal(0, 1, (8, 256))
    g, b = rng.normal(1, 0.1, 256), rng.normal(0, 0.1, 256)
    sx = quant.scale_for(x, 16)
    p1 = plans.plan_norm(g, b, 1e-5, sx, 16, 0.05, 8)
    p2 = plans.plan_norm(g.copy(), b.copy(), 1e-5, sx, 16, 0.05, 8)
    assert np.array_equal(p1.gain, p2.gain) and np.array_equal(p1.bias, p2.bias)
    xq = quant.codes(x, sx, 16)
    assert torch.equal(recipes.norm(xq, p1), recipes.norm(xq.clone(), p2))
    t1 = plans.plan_unary("gelu", 0.05, 0.04, 8).table
    assert np.array_equal(t1, plans.plan_unary("gelu", 0.05, 0.04, 8).table)
    s1 = plans.plan_softmax(0.013)
    assert np.array_equal(s1.exp_hi, plans.plan_softmax(0.013).exp_hi)
    assert qc.quantize_multiplier(0.0123) == qc.quantize_multiplier(0.0123)
