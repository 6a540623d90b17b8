"""linear / matmul lowerings against the recipes, bit for bit, on tiny and default."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.lower.linear import (
    PlacedTile,
    lower_linear,
    lower_matmul,
    place_tiles,
    preload_linear,
)
from cimc.errors import CimcError
from cimc.machine.program import MacroRef, View
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
    """60 tokens: x stays whole in the scratchpad but the accumulators of a column block
    do not, so each block runs in several passes; weights come from flash."""
    plan, x, want = _linear_case(1, 60, 96, 250, 8)
    b, xv, yv = _build_linear("tiny", 60, 96, 250, 8)
    lower_linear(b, xv, yv, plan, weight_space="flash")
    program, _ = b.build()
    loads = [
        i for s in program.cores for i in s.instrs if i.opcode == "dma" and i.operands[1] == xv
    ]
    stores = [i for s in program.cores for i in s.instrs if i.opcode == "dma" and
              isinstance(i.operands[0], View) and i.operands[0].symbol == "y"]  # fmt: skip
    assert len(loads) == 2  # the whole x once into each core
    assert len(stores) > 8  # more than one pass per column block
    assert_exact(run(b, {"x": x.astype(np.int8)})["y"], want)


def test_linear_weights_in_gb_are_written_without_staging() -> None:
    plan, x, want = _linear_case(29, 7, 96, 250, 8)
    b, xv, yv = _build_linear("tiny", 7, 96, 250, 8)
    lower_linear(b, xv, yv, plan, weight_space="gb")
    program, _ = b.build()
    srcs = [i.operands[1] for s in program.cores for i in s.instrs if i.opcode == "mload"]
    assert len(srcs) == 24 and all(isinstance(v, View) and v.space == "gb" for v in srcs)
    assert_exact(run(b, {"x": x.astype(np.int8)})["y"], want)


def test_linear_packed_windows_and_resident_tiles() -> None:
    """Two edge tiles share one macro in disjoint windows; lowering the same layer again
    (the next decode step) reuses the resident tiles: no second mload."""
    k, n = 40, 16  # tiles 32x16 and 8x16 on tiny
    plan, x, want = _linear_case(7, 4, k, n, 8)
    slots = (PlacedTile.at(0, 32, 0, 16, 0, 0, 0, 0), PlacedTile.at(32, 40, 0, 16, 0, 0, 0, 16))
    b = ProgramBuilder(arch("tiny"))
    xv = b.input("x", "i8", 4, k)
    y1, y2 = b.output("y1", "i8", 4, n), b.output("y2", "i8", 4, n)
    lower_linear(b, xv, y1, plan, slots=slots, name="fc")
    lower_linear(b, xv, y2, plan, slots=slots, name="fc")
    program, _ = b.build()
    windows = [i.operands[0] for i in program.instrs(0) if i.opcode.startswith("mload")]
    assert windows == [MacroRef(0, 0, 32, 0, 16), MacroRef(0, 0, 8, 16, 32)]
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
    """Slots from cimc.backend.plan.mapping (packed edge tiles, several cores) lower exactly."""
    from cimc.backend.lower.linear import slots_from_placement
    from cimc.backend.plan.mapping import place
    from cimc.backend.plan.target import Target
    from cimc.backend.plan.tiling import tile_layer
    from cimc.backend.plan.workload import MatmulLayer

    t, k, n = 5, 70, 90
    plan, x, want = _linear_case(11, t, k, n, 8)
    target = Target.from_arch(arch(arch_name))
    lt = tile_layer(MatmulLayer("fc", k, n, t), 0, target.rows, target.cols)
    slots = slots_from_placement(place(lt.tiles, target), "fc")
    b, xv, yv = _build_linear(arch_name, t, k, n, 8)
    lower_linear(b, xv, yv, plan, slots=slots)
    assert_exact(run(b, {"x": x.astype(np.int8)})["y"], want)


def test_linear_one_macro_reloaded_for_every_tile() -> None:
    """Every tile goes through macro 0 at (0, 0): the prefetched DMA of the next tile must
    not be mistaken for a resident tile, and each mload lands after the previous MVM."""
    t, k, n = 6, 96, 40
    plan, x, want = _linear_case(13, t, k, n, 8)
    slots = [
        PlacedTile.at(k0, k0 + 32, n0, min(n, n0 + 32), 0, 0)
        for n0 in (0, 32)
        for k0 in (0, 32, 64)
    ]
    b, xv, yv = _build_linear("tiny", t, k, n, 8)
    lower_linear(b, xv, yv, plan, slots=slots, weight_space="flash")
    program, _ = b.build()
    ops = [i.opcode for i in program.instrs(0)]
    assert ops.count("mload") == 6
    assert ops[:5] == ["dma", "dma", "dma", "mload", "mvm"]  # x, tile 0, tile 1 prefetched
    assert_exact(run(b, {"x": x.astype(np.int8)})["y"], want)


def test_schedule_overlaps_weight_loads() -> None:
    """With weights streamed from dram, the dram channel stays busy: tile DMAs overlap the
    macro writes and MVMs instead of waiting behind them."""
    from cimc.machine.schedule import simulate

    k, n, t = 256, 512, 16
    plan, _, _ = _linear_case(17, t, k, n, 8)
    b, xv, yv = _build_linear("default", t, k, n, 8)
    lower_linear(b, xv, yv, plan, split="n")
    program, _ = b.build()
    schedule = simulate(program, b.arch)
    assert schedule.channel_busy["dram"] >= k * n / b.arch.dram_bytes_per_cycle
    assert schedule.makespan < 1.1 * schedule.channel_busy["dram"]


def test_linear_block_outer_order_keeps_tiles_loaded_once() -> None:
    """Many small token chunks and tiles that evict each other across blocks: the loop
    runs block by block, so each tile is written once and x is re-read per block."""
    t, k, n = 60, 64, 64
    plan, x, want = _linear_case(19, t, k, n, 8)
    slots = [
        PlacedTile.at(k0, k0 + 32, n0, n0 + 32, 0, k0 // 32) for n0 in (0, 32) for k0 in (0, 32)
    ]
    b, xv, yv = _build_linear("tiny", t, k, n, 8)
    lower_linear(b, xv, yv, plan, slots=slots, max_tokens=4)
    program, _ = b.build()
    ops = [i.opcode for i in program.instrs(0)]
    assert ops.count("mload") == 4
    assert_exact(run(b, {"x": x.astype(np.int8)})["y"], want)


def test_preloaded_weights_are_not_written_again() -> None:
    t, k, n = 5, 60, 50
    plan, x, want = _linear_case(23, t, k, n, 16)
    b, xv, yv = _build_linear("tiny", t, k, n, 16)
    preload_linear(b, plan, "fc")

    def mloads() -> int:
        program, _ = b.build()
        return sum(i.opcode == "mload" for s in program.cores for i in s.instrs)

    assert mloads() == 4  # 2 x 2 tiles written by the preload
    lower_linear(b, xv, yv, plan, name="fc")
    assert mloads() == 4  # ... and not again by the layer
    assert_exact(run(b, {"x": x.astype(np.int8)})["y"], want)


def test_linear_from_a_load_ordered_image_staged_in_gb() -> None:
    """The streaming layout: all tiles in one contiguous image, brought into gb by one DMA
    and written into the macros from there (no per-tile staging)."""
    from cimc.backend.lower.linear import image_views

    t, k, n = 5, 70, 40
    plan, x, want = _linear_case(31, t, k, n, 8)
    b, xv, yv = _build_linear("tiny", t, k, n, 8)
    slots = place_tiles(b, k, n)
    keys = [(s.k0, s.k1, s.n0, s.n1) for s in slots][::-1]  # any load order
    offsets = np.cumsum([0] + [(k1 - k0) * (n1 - n0) for k0, k1, n0, n1 in keys])
    blob = np.concatenate([plan.weight[k0:k1, n0:n1].ravel() for k0, k1, n0, n1 in keys])
    image = b.const("fc.image", blob.reshape(1, -1), "i8", "flash")
    staged = b.region("fc.staged", "i8", 1, image.cols, "gb")
    b.emit(0, "dma", staged, image)
    views = image_views(staged, list(zip(keys, offsets.tolist(), strict=False)))
    lower_linear(b, xv, yv, plan, slots=slots, name="fc", weight_image=views)
    program, consts = b.build()
    assert "fc.w" not in consts
    flash_dmas = [i for s in program.cores for i in s.instrs if i.opcode == "dma" and
                  any(isinstance(v, View) and v.space == "flash" for v in i.operands)]  # fmt: skip
    assert len(flash_dmas) == 1
    assert_exact(run(b, {"x": x.astype(np.int8)})["y"], want)


def test_auto_split_follows_the_traffic() -> None:
    """BERT-base FFN on default: the down projection (K = 3072) cannot hold x on every
    core and splits K; the up projection keeps column blocks per core."""
    from cimc.backend.lower.linear import auto_split

    b = ProgramBuilder(arch("default"))
    down, up = b.input("h", "i8", 128, 3072), b.input("x", "i8", 128, 768)
    assert auto_split(b, down, 768) == "k"
    assert auto_split(b, up, 3072) == "n"
    assert auto_split(b, b.input("x1", "i8", 1, 100), 500) == "n"  # one K tile: nothing to split


@pytest.mark.parametrize(("t", "loads"), [(128, 1), (300, 3)])
def test_tiles_stay_while_tokens_stream_when_accumulators_fit(t: int, loads: int) -> None:
    """768 -> 3072 on `zigzag-dimc` (one macro: every tile evicts the last): with x and an
    int32 accumulator for every token in the scratchpad but not their output codes too,
    the epilogue goes in passes and each tile is written once, not once per pass. At 300
    tokens the accumulators no longer fit: a tile is written once per token chunk (what
    re-reading x per column block instead would cost more bytes than)."""
    from cimc.machine.interpreter import run_program
    from cimc.machine.validator import validate
    from cimc.verify import weight_bytes_loaded

    k, n = 768, 3072
    plan, x, want = _linear_case(7, t, k, n, 16)
    b, xv, yv = _build_linear("zigzag-dimc", t, k, n, 16)
    with b.at("/fc"):
        lower_linear(b, xv, yv, plan)
    program, consts = b.build("lowered.cimasm", "lowered.safetensors")
    validate(program, b.arch)
    got = run_program(program, b.arch, {"x": x.astype(np.int8)}, consts).outputs["y"]
    assert_exact(got, want)
    assert weight_bytes_loaded(program) == loads * k * n


@pytest.mark.parametrize(
    ("arch_name", "t", "k", "n", "split"),
    [("tiny", 5, 96, 249, "n"), ("tiny", 4, 70, 130, "k"), ("default", 3, 300, 257, "n")],
)
def test_int4_linear_exact_with_packed_tiles(
    arch_name: str, t: int, k: int, n: int, split: str
) -> None:
    """int4 weights packed two a cell (odd widths pad the last half), run by mvm.i4: the
    recipe's result, and half the weight bytes of int8 (rounded up per tile row)."""
    from cimc.verify import weight_bytes_loaded

    rng = np.random.default_rng(k + n)
    w = rng.normal(0, 0.2, (k, n))
    plan = plan_linear(w, rng.normal(0, 2, n), 0.05, 0.3, 16, weight_bits=4)
    x = codes(rng, (t, k), 8)
    want = recipes.linear(torch.from_numpy(x), plan)
    b, xv, yv = _build_linear(arch_name, t, k, n, 16)
    with b.at("/fc"):
        lower_linear(b, xv, yv, plan, split=split)
    program, consts = b.build("lowered.cimasm", "lowered.safetensors")
    from cimc.machine.interpreter import run_program
    from cimc.machine.validator import validate

    validate(program, b.arch)
    assert_exact(run_program(program, b.arch, {"x": x.astype(np.int8)}, consts).outputs["y"], want)
    ops = {i.opcode for s in program.cores for i in s.instrs}
    assert "mvm.i4" in ops and "mvm" not in ops
    assert weight_bytes_loaded(program) == k * ((n + 1) // 2)


@pytest.mark.parametrize(
    ("arch_name", "k", "n", "group", "split"),
    [
        ("tiny", 96, 70, 16, "n"),  # groups inside a tile
        ("tiny", 100, 64, 48, "k"),  # groups across tiles and cores, a short last one
        ("default", 300, 130, 128, "n"),  # a group per tile
    ],
)
def test_group_scaled_int4_linear_exact(
    arch_name: str, k: int, n: int, group: int, split: str
) -> None:
    rng = np.random.default_rng(group + k)
    w = rng.normal(0, 0.2, (k, n)) * rng.uniform(0.05, 2.0, (k, 1))  # rows of varied scale
    plan = plan_linear(w, rng.normal(0, 2, n), 0.05, 0.3, 16, weight_bits=4, group_size=group)
    assert plan.group_mult.shape == (-(-k // group), n) and plan.group_mult.max() == 256
    x = codes(rng, (4, k), 8)
    want = recipes.linear(torch.from_numpy(x), plan)
    b, xv, yv = _build_linear(arch_name, 4, k, n, 16)
    with b.at("/fc"):
        lower_linear(b, xv, yv, plan, split=split)
    got = run(b, {"x": x.astype(np.int8)})["y"]
    assert_exact(got, want)
