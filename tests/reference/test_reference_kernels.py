"""Each float kernel against an independent computation (torch SDPA, transformers, numpy f64)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cimc.ir import DType
from cimc.ir import ops as O
from cimc.ir.op_base import Op
from cimc.reference.float_model import evaluate_op
from cimc.reference.kernels import KERNELS

RNG = np.random.default_rng(1234)


def randn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def run(op: Op, *operands: np.ndarray) -> np.ndarray:
    return evaluate_op(op, list(operands))


def t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a)


# ---- attention -----------------------------------------------------------------------


def reference_attention(q, k, v, allowed, scale):  # type: ignore[no-untyped-def]
    """Row by row in float64, straight from the definition (GQA by head index)."""
    b, hq, sq, _ = q.shape
    hkv, sk = k.shape[1], k.shape[2]
    out = np.zeros((b, hq, sq, v.shape[3]))
    for n in range(b):
        for h in range(hq):
            kh = h // (hq // hkv)
            for i in range(sq):
                ok = np.broadcast_to(allowed, (b, hq, sq, sk))[n, h, i]
                if not ok.any():
                    continue
                s = q[n, h, i].astype(np.float64) @ k[n, kh].T.astype(np.float64) * scale
                s = np.where(ok, s, -np.inf)
                p = np.exp(s - s.max())
                out[n, h, i] = (p / p.sum()) @ v[n, kh]
    return out


def test_attention_causal_matches_sdpa() -> None:
    q, k, v = randn(2, 4, 7, 8), randn(2, 4, 7, 8), randn(2, 4, 7, 5)
    got = run(O.Attention(scale=0.3, causal=True), q, k, v)
    want = F.scaled_dot_product_attention(t(q), t(k), t(v), is_causal=True, scale=0.3)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)


def test_attention_gqa_with_padding_mask_matches_sdpa() -> None:
    q, k, v = randn(2, 8, 6, 4), randn(2, 2, 6, 4), randn(2, 2, 6, 4)
    mask = np.ones((2, 1, 1, 6), bool)
    mask[1, ..., 4:] = False  # second sequence is padded
    got = run(O.Attention(scale=0.5), q, k, v, mask)
    want = F.scaled_dot_product_attention(
        t(q), t(k), t(v), attn_mask=t(mask), scale=0.5, enable_gqa=True
    )
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, reference_attention(q, k, v, mask, 0.5), rtol=1e-4, atol=1e-5)


def test_attention_bias_and_mask_match_sdpa_with_a_float_mask() -> None:
    """bias=True: the last operand is added to the scaled scores (sdpa's float attn_mask),
    the bool mask still blocks."""
    q, k, v = randn(2, 4, 6, 4), randn(2, 2, 6, 4), randn(2, 2, 6, 4)
    bias = randn(1, 4, 6, 6) * 2
    mask = np.ones((2, 1, 1, 6), bool)
    mask[1, ..., 5:] = False
    got = run(O.Attention(scale=0.5, bias=True), q, k, v, mask, bias)
    additive = np.where(mask, bias, -np.inf).astype(np.float32)
    want = F.scaled_dot_product_attention(
        t(q), t(k), t(v), attn_mask=t(additive), scale=0.5, enable_gqa=True
    )
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)
    alone = run(O.Attention(scale=0.5, bias=True), q, k, v, bias)  # a bias and no mask
    plain = F.scaled_dot_product_attention(
        t(q), t(k), t(v), attn_mask=t(bias), scale=0.5, enable_gqa=True
    )
    np.testing.assert_allclose(alone, plain.numpy(), rtol=1e-5, atol=1e-5)


def test_attention_causal_with_kv_cache_aligns_bottom_right() -> None:
    # 3 new queries against 7 keys: query i sees keys j <= i + 4.
    q, k, v = randn(1, 4, 3, 4), randn(1, 2, 7, 4), randn(1, 2, 7, 4)
    allowed = np.tril(np.ones((3, 7), bool), k=4)
    got = run(O.Attention(scale=0.5, causal=True), q, k, v)
    np.testing.assert_allclose(
        got, reference_attention(q, k, v, allowed, 0.5), rtol=1e-4, atol=1e-5
    )


def test_attention_fully_masked_row_gives_zeros() -> None:
    q, k, v = randn(1, 2, 4, 4), randn(1, 2, 4, 4), randn(1, 2, 4, 4)
    mask = np.ones((1, 1, 4, 4), bool)
    mask[0, 0, 2, :] = False
    got = run(O.Attention(scale=1.0, causal=True), q, k, v, mask)
    assert not np.isnan(got).any()
    np.testing.assert_array_equal(got[:, :, 2], 0.0)
    allowed = mask & np.tril(np.ones((4, 4), bool))
    np.testing.assert_allclose(
        got, reference_attention(q, k, v, allowed, 1.0), rtol=1e-4, atol=1e-5
    )


# ---- rotary and norms ----------------------------------------------------------------


def test_rotary_matches_transformers_llama() -> None:
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    q, k = randn(2, 4, 6, 8), randn(2, 2, 6, 8)
    angles = np.arange(6)[:, None] * np.concatenate([np.arange(4), np.arange(4)])[None] * 0.1
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    want_q, want_k = llama.apply_rotary_pos_emb(t(q), t(k), t(cos)[None], t(sin)[None])
    np.testing.assert_allclose(run(O.Rotary(), q, cos, sin), want_q.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(run(O.Rotary(), k, cos, sin), want_k.numpy(), rtol=1e-6, atol=1e-6)


def test_rms_norm_matches_torch_and_float64() -> None:
    x, gamma = randn(2, 5, 16), randn(16)
    got = run(O.RmsNorm(eps=1e-6), x, gamma)
    want = F.rms_norm(t(x), (16,), t(gamma), eps=1e-6).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    x64 = x.astype(np.float64)
    ref = x64 / np.sqrt((x64**2).mean(-1, keepdims=True) + 1e-6) * gamma
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_layer_norm_matches_float64() -> None:
    x, gamma, beta = randn(3, 4, 32) * 3 + 1, randn(32), randn(32)
    got = run(O.LayerNorm(eps=1e-5), x, gamma, beta)
    x64 = x.astype(np.float64)
    centered = x64 - x64.mean(-1, keepdims=True)
    ref = centered / np.sqrt((centered**2).mean(-1, keepdims=True) + 1e-5) * gamma + beta
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


# ---- every other op against numpy ----------------------------------------------------

erf64 = np.vectorize(math.erf)
POS = np.abs(randn(3, 4)) + 0.1
A, B = randn(3, 4), randn(1, 4)
IDS = RNG.integers(0, 10, size=(2, 3))
TABLE = randn(10, 5)
BOOL_A, BOOL_B = RNG.random((3, 4)) < 0.5, RNG.random((1, 4)) < 0.5

Case = tuple[Op, list[np.ndarray], Callable[..., Any]]
CASES: dict[str, Case] = {
    "linear": (O.Linear(), [A, randn(4, 6), randn(6)], lambda x, w, b: x @ w + b),
    "matmul": (O.MatMul(), [randn(2, 3, 4), randn(4, 5)], np.matmul),
    "softmax": (O.Softmax(0), [A], lambda x: np.exp(x) / np.exp(x).sum(0)),
    "gelu": (O.Gelu("none"), [A], lambda x: 0.5 * x * (1 + erf64(x / math.sqrt(2)))),
    "silu": (O.Silu(), [A], lambda x: x / (1 + np.exp(-x))),
    "relu": (O.Relu(), [A], lambda x: np.maximum(x, 0)),
    "tanh": (O.Tanh(), [A], np.tanh),
    "sigmoid": (O.Sigmoid(), [A], lambda x: 1 / (1 + np.exp(-x))),
    "erf": (O.Erf(), [A], erf64),
    "exp": (O.Exp(), [A], np.exp),
    "neg": (O.Neg(), [A], np.negative),
    "sqrt": (O.Sqrt(), [POS], np.sqrt),
    "rsqrt": (O.Rsqrt(), [POS], lambda x: 1 / np.sqrt(x)),
    "reciprocal": (O.Reciprocal(), [POS], np.reciprocal),
    "pow": (O.Pow(1.5), [POS], lambda x: x**1.5),
    "add": (O.Add(), [A, B], np.add),
    "sub": (O.Sub(), [A, B], np.subtract),
    "mul": (O.Mul(), [A, B], np.multiply),
    "div": (O.Div(), [A, POS], np.divide),
    "equal": (O.Equal(), [IDS, IDS[:1]], np.equal),
    "less": (O.Less(), [A, B], np.less),
    "greater": (O.Greater(), [A, B], np.greater),
    "logical_not": (O.LogicalNot(), [BOOL_A], np.logical_not),
    "logical_and": (O.LogicalAnd(), [BOOL_A, BOOL_B], np.logical_and),
    "logical_or": (O.LogicalOr(), [BOOL_A, BOOL_B], np.logical_or),
    "where": (O.Where(), [BOOL_A, A, B], np.where),
    "cast": (O.Cast(DType.I32), [A * 10], lambda x: np.trunc(x).astype(np.int32)),
    "embedding": (O.Embedding(), [IDS, TABLE], lambda i, tab: tab[i]),
    "reduce_mean": (O.ReduceMean((0,), True), [A], lambda x: x.mean(0, keepdims=True)),
    "reduce_sum": (O.ReduceSum((0, 1)), [IDS.astype(np.int8)], lambda x: np.int8(x.sum())),
    "reduce_max": (O.ReduceMax((1,)), [A], lambda x: x.max(1)),
    "reshape": (O.Reshape((4, 3)), [A], lambda x: x.reshape(4, 3)),
    "transpose": (O.Transpose((1, 0)), [A], np.transpose),
    "slice": (O.Slice(1, 1, 4, 2), [A], lambda x: x[:, 1:4:2]),
    "concat": (O.Concat(0), [A, B, A], lambda *xs: np.concatenate(xs, 0)),
    "gather": (O.Gather(1, 2), [A], lambda x: x[:, 2]),
    "expand": (O.Expand((2, 3, 4)), [B], lambda x: np.broadcast_to(x, (2, 3, 4))),
    "clip": (O.Clip(-0.5, 0.25), [A], lambda x: np.clip(x, -0.5, 0.25)),
    "log": (O.Log(), [POS], np.log),
    "abs": (O.Abs(), [A], np.abs),
    "log_softmax": (O.LogSoftmax(1), [A], lambda x: x - np.log(np.exp(x).sum(1, keepdims=True))),
    "maximum": (O.Maximum(), [A, B], np.maximum),
    "minimum": (O.Minimum(), [A, B], np.minimum),
    "reduce_min": (O.ReduceMin((0,)), [A], lambda x: x.min(0)),
    "cumsum": (O.CumSum(1, exclusive=True, reverse=True), [IDS], lambda x: _rev_excl_scan(x)),
}


def _rev_excl_scan(x: np.ndarray) -> np.ndarray:
    """ONNX CumSum with exclusive=1, reverse=1 along axis 1: y[j] = sum(x[j+1:])."""
    return np.stack([x[:, j + 1 :].sum(1) for j in range(x.shape[1])], 1).astype(x.dtype)


SPECIAL = {"attention", "rotary", "rms_norm", "layer_norm", "input", "constant"}
SPECIAL |= {"conv", "pool", "im2col"}  # tested against torch's own ops below


def test_every_op_has_a_kernel_and_a_test() -> None:
    assert O.CANONICAL_OPS - {"input", "constant"} <= {cls.NAME for cls in KERNELS}
    assert set(CASES) | SPECIAL == O.CANONICAL_OPS


@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_matches_numpy(name: str) -> None:
    op, operands, reference = CASES[name]
    got = run(op, *operands)
    want = np.asarray(
        reference(*[a.astype(np.float64) if a.dtype == np.float32 else a for a in operands])
    )
    assert got.shape == want.shape
    if got.dtype == np.float32:
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)
    else:
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_gelu_tanh_and_integer_division() -> None:
    x = randn(50)
    x64 = x.astype(np.float64)
    tanh_ref = 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64**3)))
    np.testing.assert_allclose(run(O.Gelu("tanh"), x), tanh_ref, rtol=1e-5, atol=1e-6)
    a, b = np.array([7, -7, 6], np.int64), np.array([2, 2, -4], np.int64)
    np.testing.assert_array_equal(run(O.Div(), a, b), [3, -3, -1])  # truncation, as ONNX


def test_embedding_out_of_range_is_a_located_error() -> None:
    from cimc.errors import CimcError

    with pytest.raises(CimcError, match=r"^%emb: embedding failed .* token id 10 is outside"):
        evaluate_op(O.Embedding(), [np.array([[10]]), TABLE], "%emb")


# ---- sliding windows against torch's conv, pools and unfold (symmetric pads) ------------


def test_conv_matches_torch() -> None:
    x, w, b = randn(2, 4, 9, 8), randn(6, 2, 3, 3), randn(6)
    op = O.Conv((2, 1), (1, 2, 1, 2), (1, 2), 2)
    want = F.conv2d(t(x), t(w), t(b), (2, 1), (1, 2), (1, 2), 2).numpy()
    np.testing.assert_allclose(run(op, x, w, b), want, rtol=1e-5, atol=1e-5)


def test_pools_match_torch() -> None:
    x = randn(2, 3, 9, 9)
    got = run(O.Pool("max", (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)), x)
    np.testing.assert_array_equal(got, F.max_pool2d(t(x), 3, 2, 1).numpy())
    got = run(O.Pool("avg", (3, 2), (2, 1), (1, 0, 1, 0), count_include_pad=True), x)
    want = F.avg_pool2d(t(x), (3, 2), (2, 1), (1, 0), count_include_pad=True).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_im2col_matches_torch_unfold_on_floats_and_integers() -> None:
    x = randn(2, 3, 7, 6)
    op = O.Im2col((2, 3), (2, 1), (1, 1, 1, 1), (2, 1))
    want = F.unfold(t(x), (2, 3), (2, 1), (1, 1), (2, 1)).numpy()
    np.testing.assert_array_equal(run(op, x), want)
    ints = np.round(x * 10).astype(np.int32)
    want_int = F.unfold(t(ints.astype(np.float32)), (2, 3), (2, 1), (1, 1), (2, 1)).numpy()
    np.testing.assert_array_equal(run(op, ints), want_int.astype(np.int32))
