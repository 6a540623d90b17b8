"""A whole transformer block lowered op by op through one builder, against the recipes.

Composition is what the per-op tests cannot show: intermediates in dram regions, work of
one op spread over cores and read by other cores in the next op (automatic barriers),
constants of several layers side by side.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.lower.attention import Heads, lower_attention
from cimc.backend.lower.elementwise import lower_add, lower_unary
from cimc.backend.lower.linear import lower_linear
from cimc.backend.lower.norm import lower_norm
from cimc.machine.program import View
from cimc.quant import recipes
from cimc.quant.plans import plan_add, plan_attention, plan_linear, plan_norm, plan_unary
from tests.backend.lower_harness import ARCHS, arch, assert_exact, codes, run

T, D, HEADS, FF = 7, 96, 3, 250


def _plans(rng: np.random.Generator) -> dict:  # type: ignore[type-arg]
    def lin(k: int, n: int, xs: float, os: float):  # type: ignore[no-untyped-def]
        return plan_linear(rng.normal(0, k**-0.5, (k, n)), rng.normal(0, 0.1, n), xs, os, 8)

    hd = D // HEADS
    return {
        "ln": plan_norm(rng.normal(1, 0.2, D), rng.normal(0, 0.1, D), 1e-5, 0.05, 8, 0.03, 8),
        "q": lin(D, D, 0.03, 0.05),
        "k": lin(D, D, 0.03, 0.05),
        "v": lin(D, D, 0.03, 0.05),
        "attn": plan_attention(0.05, 0.05, 0.05, hd**-0.5, 0.04, 8, hd, 6.0, causal=True),
        "o": lin(D, D, 0.04, 0.05),
        "res": plan_add(0.05, 0.05, 0.06, 8),
        "up": lin(D, FF, 0.06, 0.05),
        "gelu": plan_unary("gelu", 0.05, 0.04, 8),
        "down": lin(FF, D, 0.04, 0.05),
        "res2": plan_add(0.06, 0.05, 0.07, 8),
    }


def _golden(x: torch.Tensor, p: dict) -> torch.Tensor:  # type: ignore[type-arg]
    h = recipes.norm(x, p["ln"])
    hd = D // HEADS

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(1, T, HEADS, hd).transpose(1, 2)

    q, k, v = (heads(recipes.linear(h, p[n])) for n in "qkv")
    a = recipes.attention(q, k, v, p["attn"]).transpose(1, 2).reshape(T, D)
    r = recipes.add(x, recipes.linear(a, p["o"]), p["res"])
    f = recipes.linear(recipes.unary(recipes.linear(r, p["up"]), p["gelu"]), p["down"])
    return recipes.add(r, f, p["res2"])


def _heads(*views: View) -> tuple[Heads, Heads, Heads, Heads]:
    q, k, v, a = (Heads(t, 1, HEADS, T, D // HEADS) for t in views)
    return q, k, v, a


def _block_program(arch_name: str, p: dict) -> ProgramBuilder:  # type: ignore[type-arg]
    b = ProgramBuilder(arch(arch_name))
    xv, out = b.input("x", "i8", T, D), b.output("y", "i8", T, D)

    def tmp(n: int) -> View:
        return b.region(None, "i8", T, n)

    h, q, k, v, a, o, r, u, g, f = (tmp(n) for n in (D, D, D, D, D, D, D, FF, FF, D))
    steps = [
        ("/ln", lambda: lower_norm(b, xv, h, p["ln"])),
        ("/q", lambda: lower_linear(b, h, q, p["q"])),
        ("/k", lambda: lower_linear(b, h, k, p["k"], split="k")),
        ("/v", lambda: lower_linear(b, h, v, p["v"])),
        ("/attn", lambda: lower_attention(b, *_heads(q, k, v, a), p["attn"])),
        ("/o", lambda: lower_linear(b, a, o, p["o"])),
        ("/res", lambda: lower_add(b, xv, o, r, p["res"])),
        ("/up", lambda: lower_linear(b, r, u, p["up"])),
        ("/gelu", lambda: lower_unary(b, u, g, p["gelu"])),
        ("/down", lambda: lower_linear(b, g, f, p["down"], split="k")),
        ("/res2", lambda: lower_add(b, r, f, out, p["res2"])),
    ]  # fmt: skip
    for loc, step in steps:
        with b.at(loc):
            step()
    return b


@pytest.mark.parametrize("arch_name", [*ARCHS, "large"])
def test_transformer_block_exact(arch_name: str) -> None:
    rng = np.random.default_rng(42)
    p = _plans(rng)
    x = codes(rng, (T, D), 8)
    b = _block_program(arch_name, p)
    program, _ = b.build()
    sync = sum(i.opcode in ("barrier", "recv") for s in program.cores for i in s.instrs)
    assert sync >= 5  # ops hand over data (barriers or point-to-point tokens)
    got = run(b, {"x": x.astype(np.int8)})["y"]
    assert_exact(got, _golden(torch.from_numpy(x), p))


def test_lowering_is_deterministic() -> None:
    """Two builds of the same block print byte-identical programs and constants."""
    from cimc.machine.printer import print_program

    p = _plans(np.random.default_rng(3))
    (p1, c1), (p2, c2) = (_block_program("tiny", p).build() for _ in range(2))
    assert print_program(p1) == print_program(p2)
    assert list(c1) == list(c2) and all((c1[k] == c2[k]).all() for k in c1)
