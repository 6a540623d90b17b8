"""Fused attention lowering against the recipe, bit for bit, on tiny and default."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.lower.attention import Heads, lower_attention
from cimc.errors import CimcError
from cimc.machine.program import MacroRef
from cimc.quant import recipes
from cimc.quant.plans import plan_attention
from tests.backend.lower_harness import ARCHS, arch, assert_exact, codes, run

CASES = [
    # batch, hq, hkv, sq, sk, d, dv, causal, p_bits, mask
    (1, 3, 3, 7, 7, 32, 32, False, 14, None),
    (2, 4, 2, 7, 7, 16, 24, True, 14, "padding"),
    (1, 2, 1, 5, 9, 40, 36, True, 7, "full"),
    (1, 2, 2, 1, 12, 32, 32, True, 14, None),  # a decode step: one query, a longer KV
    (1, 1, 1, 6, 40, 16, 20, True, 14, "padding"),  # K^T wider than tiny's 32 columns
]


def _to_tokens(t: np.ndarray) -> np.ndarray:
    """[B, H, S, D] -> token-major 2-D [B*S, H*D]."""
    bsz, h, s, d = t.shape
    return t.transpose(0, 2, 1, 3).reshape(bsz * s, h * d)


@pytest.mark.parametrize("mode", ["macro", "vector"])
@pytest.mark.parametrize("arch_name", ARCHS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"b{c[0]}h{c[1]}/{c[2]}s{c[3]}x{c[4]}")
def test_attention_exact(arch_name: str, case: tuple, mode: str) -> None:  # type: ignore[type-arg]
    bsz, hq, hkv, sq, sk, d, dv, causal, p_bits, mask_kind = case
    rng = np.random.default_rng(sum(case[:7]))
    q, k = codes(rng, (bsz, hq, sq, d), 8), codes(rng, (bsz, hkv, sk, d), 8)
    v = codes(rng, (bsz, hkv, sk, dv), 8)
    plan = plan_attention(
        0.05, 0.05, 0.04, d**-0.5, 0.02, 8, d, logit_absmax=8.0, causal=causal, p_bits=p_bits
    )
    mask = None
    if mask_kind == "padding":
        mask = np.ones((bsz, sk), bool)
        mask[0, -2:] = False
    elif mask_kind == "full":
        mask = rng.random((bsz * sq, sk)) < 0.6
        mask[0] = False  # a fully masked query row gives zeros
    tmask = None
    if mask is not None:
        shaped = mask[:, None, None, :] if mask_kind == "padding" else mask.reshape(bsz, 1, sq, sk)
        tmask = torch.from_numpy(shaped)
    tq, tk, tv = (torch.from_numpy(t) for t in (q, k, v))
    want = recipes.attention(tq, tk, tv, plan, tmask)
    b = ProgramBuilder(arch(arch_name))
    qv = b.input("q", "i8", bsz * sq, hq * d)
    kv = b.input("k", "i8", bsz * sk, hkv * d)
    vv = b.input("v", "i8", bsz * sk, hkv * dv)
    ov = b.output("y", "i8", bsz * sq, hq * dv)
    inputs = {n: _to_tokens(t).astype(np.int8) for n, t in (("q", q), ("k", k), ("v", v))}
    mv = None
    if mask is not None:
        mv = b.input("mask", "i8", *mask.shape)
        inputs["mask"] = mask.astype(np.int8)
    with b.at("/attn"):
        lower_attention(
            b,
            Heads(qv, bsz, hq, sq, d),
            Heads(kv, bsz, hkv, sk, d),
            Heads(vv, bsz, hkv, sk, dv),
            Heads(ov, bsz, hq, sq, dv),
            plan,
            mask=mv,
            mode=mode,
        )
    program, _ = b.build()
    mloads = sum(i.opcode.startswith("mload") for s in program.cores for i in s.instrs)
    assert (mloads > 0) == (mode == "macro")
    got = run(b, inputs)["y"]
    assert_exact(got, torch.from_numpy(_to_tokens(want.numpy())))
    assert np.abs(got).max() > 0


def test_attention_rejects_head_mismatch() -> None:
    plan = plan_attention(0.05, 0.05, 0.04, 0.25, 0.02, 8, 16, logit_absmax=8.0)
    b = ProgramBuilder(arch("tiny"))
    q, k = b.input("q", "i8", 4, 3 * 16), b.input("k", "i8", 4, 2 * 16)
    y = b.output("y", "i8", 4, 3 * 16)
    with pytest.raises(CimcError, match="attention shapes disagree"):
        lower_attention(
            b,
            Heads(q, 1, 3, 4, 16),
            Heads(k, 1, 2, 4, 16),
            Heads(k, 1, 2, 4, 16),
            Heads(y, 1, 3, 4, 16),
            plan,
        )


def test_attention_mode_choice_follows_the_estimate() -> None:
    """Macro writes are cheap while macros are free; when every macro holds static weights
    (weight-stationary), evicting them costs a reload and the vector unit wins."""
    from cimc.backend.lower.attention import choose_mode

    plan = plan_attention(0.05, 0.05, 0.04, 0.25, 0.02, 8, 64, logit_absmax=8.0)
    b = ProgramBuilder(arch("default"))
    q, k, v = (Heads(b.input(n, "i8", 128, 64), 1, 1, 128, 64) for n in "qkv")
    q1 = Heads(b.input("q1", "i8", 1, 64), 1, 1, 1, 64)
    assert choose_mode(b.arch, q, k, v, plan) == "macro"
    assert choose_mode(b.arch, q1, k, v, plan) == "macro"
    assert choose_mode(b.arch, q1, k, v, plan, free_macros=0) == "vector"


def test_attention_uses_only_the_given_macros() -> None:
    rng = np.random.default_rng(9)
    q, k, v = (
        codes(rng, (1, 2, 7, 40), 8),
        codes(rng, (1, 1, 7, 40), 8),
        codes(rng, (1, 1, 7, 40), 8),
    )
    plan = plan_attention(0.05, 0.05, 0.04, 0.2, 0.02, 8, 40, logit_absmax=8.0)
    tq, tk, tv = (torch.from_numpy(t) for t in (q, k, v))
    want = recipes.attention(tq, tk, tv, plan)
    b = ProgramBuilder(arch("tiny"))
    qv, kv, vv = b.input("q", "i8", 7, 80), b.input("k", "i8", 7, 40), b.input("v", "i8", 7, 40)
    ov = b.output("y", "i8", 7, 80)
    lower_attention(
        b, Heads(qv, 1, 2, 7, 40), Heads(kv, 1, 1, 7, 40), Heads(vv, 1, 1, 7, 40),
        Heads(ov, 1, 2, 7, 40), plan, mode="macro", macros=[3],
    )  # fmt: skip
    program, _ = b.build()
    used = {
        op.index
        for s in program.cores
        for i in s.instrs
        for op in i.operands
        if isinstance(op, MacroRef)
    }
    assert used == {3}
    inputs = {n: _to_tokens(t).astype(np.int8) for n, t in (("q", q), ("k", k), ("v", v))}
    assert_exact(run(b, inputs)["y"], torch.from_numpy(_to_tokens(want.numpy())))


@pytest.mark.parametrize("head_major", [False, True])
def test_attention_reads_a_partly_filled_kv_cache(head_major: bool) -> None:
    """Decode: K and V live in caches of 10 positions per sequence, 6 of them valid."""
    rng = np.random.default_rng(12)
    bsz, hq, hkv, sk, cap, d = 2, 2, 1, 6, 10, 16
    q, k, v = (
        codes(rng, (bsz, hq, 1, d), 8),
        codes(rng, (bsz, hkv, cap, d), 8),
        codes(rng, (bsz, hkv, cap, d), 8),
    )
    plan = plan_attention(0.05, 0.05, 0.04, 0.25, 0.02, 8, d, logit_absmax=8.0, causal=True)
    tq, tk, tv = (torch.from_numpy(t) for t in (q, k[:, :, :sk], v[:, :, :sk]))
    want = recipes.attention(tq, tk, tv, plan)

    def layout(t: np.ndarray) -> np.ndarray:
        return t.reshape(-1, t.shape[-1]) if head_major else _to_tokens(t)

    b = ProgramBuilder(arch("tiny"))
    views = {n: b.input(n, "i8", *layout(t).shape) for n, t in (("q", q), ("k", k), ("v", v))}
    ov = b.output("y", "i8", *layout(want.numpy()).shape)
    lower_attention(
        b,
        Heads(views["q"], bsz, hq, 1, d, head_major),
        Heads(views["k"], bsz, hkv, sk, d, head_major, capacity=cap),
        Heads(views["v"], bsz, hkv, sk, d, head_major, capacity=cap),
        Heads(ov, bsz, hq, 1, d, head_major),
        plan,
    )
    inputs = {n: layout(t).astype(np.int8) for n, t in (("q", q), ("k", k), ("v", v))}
    assert_exact(run(b, inputs)["y"], torch.from_numpy(layout(want.numpy())))
