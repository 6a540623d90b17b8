"""Rows kept in the scratchpads between row-wise ops (cimc/backend/lower/kept_rows.py): the
residual add -> layer_norm -> requantize chain reads its intermediates from sp, exactly."""

from __future__ import annotations

import numpy as np
import torch

from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.lower import kept_rows
from cimc.backend.lower.elementwise import lower_add, lower_rescale
from cimc.backend.lower.norm import lower_norm
from cimc.machine.program import View
from cimc.quant import recipes
from cimc.quant.plans import plan_add, plan_norm, plan_rescale
from tests.backend.lower_harness import arch, assert_exact, codes, run

R, N = 8, 48  # 2 rows on each of default's 4 cores: one chunk per core


def _chain(between: bool) -> tuple[ProgramBuilder, dict[str, np.ndarray], torch.Tensor]:
    rng = np.random.default_rng(11)
    a, c = codes(rng, (R, N), 16), codes(rng, (R, N), 16)
    add = plan_add(0.01, 0.02, 0.03, 16)
    norm = plan_norm(rng.uniform(0.5, 2.0, N), rng.normal(0, 0.5, N), 1e-5, 0.03, 16, 0.01, 16)
    rescale = plan_rescale(0.01, 0.05, 8)
    s = recipes.add(torch.from_numpy(a), torch.from_numpy(c), add)
    want = recipes.rescale(recipes.norm(s, norm), rescale)
    b = ProgramBuilder(arch("default"))
    av, cv = b.input("a", "i16", R, N), b.input("c", "i16", R, N)
    sv, nv = b.region("s", "i16", R, N, "gb"), b.region("n", "i16", R, N, "gb")
    yv = b.output("y", "i8", R, N)
    lower_add(b, av, cv, sv, add)
    if between:  # any other instruction may have changed memory: rows are re-read
        b.emit(0, "fill", b.alloc(0, "i8", 1, 8), 0)
    lower_norm(b, sv, nv, norm, name="ln")
    lower_rescale(b, nv, yv, rescale)
    inputs = {"a": a.astype(np.int16), "c": c.astype(np.int16)}
    return b, inputs, want


def _reads_of(b: ProgramBuilder, symbol: str) -> tuple[int, int]:
    """(DMAs reading region `symbol`, DMAs writing it)."""
    program, _ = b.build("t.cimasm", "t.safetensors")
    reads = writes = 0
    for s in program.cores:
        for i in s.instrs:
            if i.opcode != "dma":
                continue
            dst, src = i.operands[0], i.operands[1]
            assert isinstance(dst, View) and isinstance(src, View)
            reads += src.symbol == symbol
            writes += dst.symbol == symbol
    return reads, writes


def test_chain_reads_intermediates_from_the_scratchpads() -> None:
    b, inputs, want = _chain(between=False)
    assert_exact(run(b, inputs)["y"], want)
    for region in ("s", "n"):
        assert _reads_of(b, region) == (0, 4)  # still written (other readers), not re-read


def test_rows_are_reread_after_any_other_instruction() -> None:
    b, inputs, want = _chain(between=True)
    assert_exact(run(b, inputs)["y"], want)
    assert _reads_of(b, "s") == (4, 4)
    assert _reads_of(b, "n") == (0, 4)


def test_nothing_is_held_when_a_chunk_exceeds_the_budget() -> None:
    b = ProgramBuilder(arch("default"))
    wide = View("gb", 0, "i16", 4, kept_rows.budget(b))  # a row of 2 * budget bytes
    assert not kept_rows.can_keep(b, wide, [(0, 0, 1), (1, 1, 2)])
    assert not kept_rows.can_keep(b, View("gb", 0, "i8", 4, 8), [(0, 0, 2), (0, 2, 4)])
    assert kept_rows.can_keep(b, View("gb", 0, "i8", 4, 8), [(0, 0, 2), (1, 2, 4)])


def _linear_then_gelu(
    linear_cores: tuple[int, ...] = (), gelu_cores: tuple[int, ...] = ()
) -> tuple[ProgramBuilder, set[int], set[int]]:
    """x [6 x 64] -> linear (3 column blocks of default's 128-column macros) -> h in gb ->
    gelu -> y, each op on the given cores (default: all), checked against the recipes;
    the builder, the cores issuing `lut` and those issuing `mvm`."""
    from cimc.backend.lower.elementwise import lower_unary
    from cimc.backend.lower.linear import lower_linear
    from cimc.quant.plans import plan_linear, plan_unary

    rng = np.random.default_rng(3)
    t, k, n = 6, 64, 300
    lin = plan_linear(rng.normal(0, 0.2, (k, n)), rng.normal(0, 1, n), 0.05, 0.05, 8)
    act = plan_unary("gelu", 0.05, 0.03, 8)
    x = codes(rng, (t, k), 8)
    want = recipes.unary(recipes.linear(torch.from_numpy(x), lin), act)
    b = ProgramBuilder(arch("default"))
    xv, hv = b.input("x", "i8", t, k), b.region("h", "i8", t, n, "gb")
    yv = b.output("y", "i8", t, n)
    with b.on_cores(linear_cores or b.chip_cores):
        lower_linear(b, xv, hv, lin, split="n")
    with b.on_cores(gelu_cores or b.chip_cores):
        lower_unary(b, hv, yv, act)
    assert_exact(run(b, {"x": x.astype(np.int8)})["y"], want)
    program, _ = b.build()
    luts = {s.core for s in program.cores if any(i.opcode == "lut" for i in s.instrs)}
    homes = {s.core for s in program.cores if any(i.opcode == "mvm" for i in s.instrs)}
    return b, luts, homes


def test_linear_blocks_feed_an_elementwise_consumer_in_place() -> None:
    """linear -> gelu: the gelu works on the linear's output blocks where they were
    computed (home cores), so the linear's output is written to memory but not re-read."""
    b, luts, homes = _linear_then_gelu()
    assert _reads_of(b, "h") == (0, 3)
    assert luts == homes


def test_a_consumer_on_other_cores_rereads_the_linear_blocks() -> None:
    """A pipeline's stage boundary between linear (cores 0, 1) and gelu (cores 2, 3,
    ProgramBuilder.on_cores): the gelu runs on its own cores and reads h from memory; the
    blocks the linear kept on cores 0 and 1 are not worked on there."""
    b, luts, homes = _linear_then_gelu((0, 1), (2, 3))
    assert homes <= {0, 1} and luts and luts <= {2, 3}
    assert _reads_of(b, "h")[0] > 0  # h comes from memory
