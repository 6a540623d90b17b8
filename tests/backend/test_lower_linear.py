"""linear / matmul lowerings against the recipes, bit for bit, on tiny and default."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cimc.backend.asm import ProgramBuilder
from cimc.backend.lower_linear import TileSlot, lower_linear, lower_matmul, place_tiles
from cimc.errors import CimcError
from cimc.quant import recipes
from cimc.quant.plans import plan_linear, plan_matmul
from tests.backend.lower_harness import arch, assert_exact, codes, np_dtype, run


def _linear_case(seed: int, t: int, k: int, n: int, out_bits: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.2, (k, n)) * rng.uniform(0.1, 3.0, n)  # per-channel spread
    bias = rng.normal(0, 2.0, n)
    plan = plan_linear(w, bias, x_scale=0.05, out_scale=rng.uniform(0.1, 2.0), out_bits=out_bits)
    x = codes(rng, (t, k), 8)
    want = recipes.linear(torch.from_numpy(x), plan)
    return plan, x, want


def _build_linear(name: str, t: int, k: int, n: int, out_bits: int, **kw):  # type: ignore[no-untyped-def]
    b = ProgramBuilder(arch(name))
    x = b.input("x", "i8", t, k)
    y = b.output("y", f"i{out_bits}", t, n)  # type: ignore[arg-type]
    return b, x, y


@pytest.mark.parametrize(
    ("arch_name", "t", "k", "n", "split", "out_bits"),
    [
        ("tiny", 7, 96, 250, "n", 8),
        ("tiny", 7, 96, 250, "k", 16),
        ("tiny", 3, 20, 5, "n", 8),
        ("default", 7, 300, 250, "n", 8),
        ("default", 5, 520, 130, "k", 16),
    ],
)
def test_linear_exact(arch_name: str, t: int, k: int, n: int, split: str, out_bits: int) -> None:
    plan, x, want = _linear_case(k * n + t, t, k, n, out_bits)
    b, xv, yv = _build_linear(arch_name, t, k, n, out_bits)
    with b.at("/fc"):
        lower_linear(b, xv, yv, plan, split=split)
    got = run(b, {"x": x.astype(np.int8)})["y"]
    assert got.dtype == np_dtype(out_bits)
    assert_exact(got, want)


def test_linear_token_chunks_and_flash_weights() -> None:
    """60 tokens do not fit tiny's scratchpad at once: several chunks, weights in flash."""
    plan, x, want = _linear_case(1, 60, 96, 250, 8)
    b, xv, yv = _build_linear("tiny", 60, 96, 250, 8)
    lower_linear(b, xv, yv, plan, weight_space="flash")
    program, _ = b.build()
    dmas = [i for i in program.instrs(0) if i.opcode == "dma" and i.operands[1].symbol == "x"]
    assert len(dmas) >= 2  # the input was loaded chunk by chunk
    assert_exact(run(b, {"x": x.astype(np.int8)})["y"], want)


def test_linear_packed_windows_and_resident_tiles() -> None:
    """Two edge tiles share one macro in disjoint windows; lowering the same layer again
    (the next decode step) reuses the resident tiles: no second mload."""
    k, n = 40, 16  # tiles 32x16 and 8x16 on tiny
    plan, x, want = _linear_case(7, 4, k, n, 8)
    slots = (TileSlot(0, 32, 0, 16, 0, 0, 0, 0), TileSlot(32, 40, 0, 16, 0, 0, 0, 16))
    b = ProgramBuilder(arch("tiny"))
    xv = b.input("x", "i8", 4, k)
    y1, y2 = b.output("y1", "i8", 4, n), b.output("y2", "i8", 4, n)
    lower_linear(b, xv, y1, plan, slots=slots, name="fc")
    lower_linear(b, xv, y2, plan, slots=slots, name="fc")
    program, _ = b.build()
    mloads = [i for i in program.instrs(0) if i.opcode.startswith("mload")]
    assert len(mloads) == 2
    assert (mloads[0].operands[0].index, mloads[1].operands[0].index) == (0, 0)
    assert mloads[1].operands[0].r0 == 0 and mloads[1].operands[0].c0 == 16
    out = run(b, {"x": x.astype(np.int8)})
    assert_exact(out["y1"], want)
    assert_exact(out["y2"], want)


def test_matmul_dynamic_operands() -> None:
    rng = np.random.default_rng(3)
    t, k, n = 9, 70, 45
    a, bm = codes(rng, (t, k), 8), codes(rng, (k, n), 8)
    plan = plan_matmul(0.03, 0.02, 0.5, 8, k)
    want = recipes.matmul(torch.from_numpy(a), torch.from_numpy(bm), plan)
    b = ProgramBuilder(arch("tiny"))
    av, bv = b.input("a", "i8", t, k), b.input("b", "i8", k, n)
    yv = b.output("y", "i8", t, n)
    lower_matmul(b, av, bv, yv, plan, split="k")
    got = run(b, {"a": a.astype(np.int8), "b": bm.astype(np.int8)})["y"]
    assert_exact(got, want)


def test_place_tiles_covers_weight() -> None:
    b = ProgramBuilder(arch("tiny"))
    slots = place_tiles(b, 96, 250, split="k")
    assert sum((s.k1 - s.k0) * (s.n1 - s.n0) for s in slots) == 96 * 250
    assert {s.core for s in slots} == {0, 1}
    assert all(0 <= s.macro < 4 for s in slots)


def test_linear_rejects_wrong_shapes() -> None:
    plan, _, _ = _linear_case(2, 3, 20, 5, 8)
    b, xv, _ = _build_linear("tiny", 3, 20, 5, 8)
    y = b.output("bad", "i8", 3, 6)
    with pytest.raises(CimcError, match="linear output must be 3x5"):
        lower_linear(b, xv, y, plan)


@pytest.mark.parametrize("arch_name", ["tiny", "default"])
def test_linear_on_planner_placement(arch_name: str) -> None:
    """Slots from cimc.backend.mapping (packed edge tiles, several cores) lower exactly."""
    from cimc.backend.lower_linear import slots_from_placement
    from cimc.backend.mapping import place
    from cimc.backend.target import Target
    from cimc.backend.tiling import tile_layer
    from cimc.backend.workload import MatmulLayer

    t, k, n = 5, 70, 90
    plan, x, want = _linear_case(11, t, k, n, 8)
    target = Target.from_arch(arch(arch_name))
    lt = tile_layer(MatmulLayer("fc", k, n, t), 0, target.rows, target.cols)
    slots = slots_from_placement(place(lt.tiles, target), "fc")
    b, xv, yv = _build_linear(arch_name, t, k, n, 8)
    lower_linear(b, xv, yv, plan, slots=slots)
    assert_exact(run(b, {"x": x.astype(np.int8)})["y"], want)
