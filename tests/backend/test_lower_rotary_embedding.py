"""Rotary and embedding lowerings against the recipes, bit for bit, on tiny and default."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.lower.common import Heads
from cimc.backend.lower.embedding import lower_embedding
from cimc.backend.lower.rotary import lower_rotary
from cimc.errors import CimcError
from cimc.machine.interpreter import run_program
from cimc.quant import recipes
from cimc.quant.plans import plan_embedding, plan_rotary
from tests.backend.lower_harness import ARCHS, arch, assert_exact, codes, np_dtype, run


def _rope_tables(seq: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    inv = 1.0 / (10000 ** (np.arange(0, d, 2) / d))
    ang = np.outer(np.arange(seq), inv)
    emb = np.concatenate([ang, ang], axis=1)
    return np.cos(emb), np.sin(emb)


@pytest.mark.parametrize("arch_name", ARCHS)
@pytest.mark.parametrize(
    ("bsz", "heads", "seq", "d", "in_bits", "pos0"),
    [(1, 3, 7, 32, 8, 0), (2, 2, 5, 64, 16, 3), (1, 4, 1, 16, 8, 9)],
)
def test_rotary_exact(
    arch_name: str, bsz: int, heads: int, seq: int, d: int, in_bits: int, pos0: int
) -> None:
    rng = np.random.default_rng(seq * d + pos0)
    cos, sin = _rope_tables(pos0 + seq, d)
    plan = plan_rotary(cos, sin, 0.02, 0.025, 8)
    x = codes(rng, (bsz, heads, seq, d), in_bits)
    tail = slice(pos0, pos0 + seq)
    sub_plan = plan_rotary(cos[tail], sin[tail], 0.02, 0.025, 8)
    want = recipes.rotary(torch.from_numpy(x), sub_plan).numpy()
    b = ProgramBuilder(arch(arch_name))
    xv = b.input("x", f"i{in_bits}", bsz * seq, heads * d)  # type: ignore[arg-type]
    yv = b.output("y", "i8", bsz * seq, heads * d)
    with b.at("/rope"):
        lower_rotary(b, Heads(xv, bsz, heads, seq, d), Heads(yv, bsz, heads, seq, d), plan, pos0)
    tokens = x.transpose(0, 2, 1, 3).reshape(bsz * seq, heads * d)
    got = run(b, {"x": tokens.astype(np_dtype(in_bits))})["y"]
    assert_exact(got, torch.from_numpy(want.transpose(0, 2, 1, 3).reshape(bsz * seq, -1)))


@pytest.mark.parametrize("head_major", [False, True])
def test_rotary_plain_views(head_major: bool) -> None:
    """2-D views are read as head-major [B*H*S x D] or token-major [B*S x H*D]."""
    rng = np.random.default_rng(1)
    bsz, heads, seq, d = 2, 3, 5, 16
    cos, sin = _rope_tables(seq, d)
    plan = plan_rotary(cos, sin, 0.02, 0.025, 8)
    x = codes(rng, (bsz, heads, seq, d), 8)
    want = recipes.rotary(torch.from_numpy(x), plan).numpy()
    if head_major:
        flat, wflat = x.reshape(-1, d), want.reshape(-1, d)
    else:
        flat = x.transpose(0, 2, 1, 3).reshape(bsz * seq, -1)
        wflat = want.transpose(0, 2, 1, 3).reshape(bsz * seq, -1)
    b = ProgramBuilder(arch("tiny"))
    xv, yv = b.input("x", "i8", *flat.shape), b.output("y", "i8", *flat.shape)
    lower_rotary(b, xv, yv, plan)
    assert_exact(run(b, {"x": flat.astype(np.int8)})["y"], torch.from_numpy(wflat))


@pytest.mark.parametrize("arch_name", ARCHS)
@pytest.mark.parametrize(("space", "out_bits"), [("dram", 8), ("flash", 16)])
def test_embedding_exact(arch_name: str, space: str, out_bits: int) -> None:
    rng = np.random.default_rng(out_bits)
    vocab, dim = 50, 96
    plan = plan_embedding(rng.normal(0, 1, (vocab, dim)), 0.03 if out_bits == 8 else 1e-4, out_bits)
    ids = rng.integers(0, vocab, (2, 7))
    want = recipes.embedding(torch.from_numpy(ids), plan).reshape(14, dim)
    b = ProgramBuilder(arch(arch_name))
    iv = b.input("ids", "i32", 2, 7)
    yv = b.output("y", f"i{out_bits}", 14, dim)  # type: ignore[arg-type]
    lower_embedding(b, iv, yv, plan, table_space=space)  # type: ignore[arg-type]
    assert_exact(run(b, {"ids": ids.astype(np.int32)})["y"], want)


def test_embedding_id_out_of_table_is_a_runtime_error() -> None:
    plan = plan_embedding(np.eye(4), 0.01, 8)
    b = ProgramBuilder(arch("tiny"), cores=[0])
    iv, yv = b.input("ids", "i32", 3, 1), b.output("y", "i8", 3, 4)
    lower_embedding(b, iv, yv, plan)
    program, consts = b.build()
    with pytest.raises(CimcError, match="gather|outside"):
        run_program(program, b.arch, {"ids": np.array([[0], [4], [1]], np.int32)}, consts)


def test_rotary_rejects_short_tables() -> None:
    cos, sin = _rope_tables(4, 16)
    b = ProgramBuilder(arch("tiny"))
    xv = b.input("x", "i8", 6, 16)
    with pytest.raises(CimcError, match="do not cover positions"):
        lower_rotary(
            b, Heads(xv, 1, 1, 6, 16), Heads(xv, 1, 1, 6, 16), plan_rotary(cos, sin, 0.1, 0.1, 8)
        )
