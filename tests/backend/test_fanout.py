"""Fan-out of one shared block to several cores (cimc/backend/lower/fanout.py): one load, NoC
multicasts, exact copies; and its users (linear x, row-wise constants) load once."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from cimc.backend.builder.alloc import sub
from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.lower.fanout import fan_out, loader, multicast_pays, pieces, senders
from cimc.backend.lower.linear import lower_linear
from cimc.backend.lower.linear_place import k_groups
from cimc.backend.lower.norm import lower_norm
from cimc.machine.program import CoreSet, Instr, View
from cimc.quant import recipes
from cimc.quant.plans import plan_linear, plan_norm
from tests.backend.lower_harness import arch, assert_exact, codes, run


def _instrs(b: ProgramBuilder) -> dict[int, list[Instr]]:
    program, _ = b.build("t.cimasm", "t.safetensors")
    return {s.core: list(s.instrs) for s in program.cores}


def _reads(instrs: dict[int, list[Instr]], symbol: str) -> int:
    """DMAs whose source is (part of) the declaration `symbol`."""
    return sum(
        1
        for core in instrs.values()
        for i in core
        if i.opcode == "dma" and isinstance(i.operands[1], View) and i.operands[1].symbol == symbol
    )


@pytest.mark.parametrize("space", ["dram", "gb"])
def test_fan_out_copies_exactly_with_one_load(space: str) -> None:
    a = arch("default")
    b = ProgramBuilder(a)
    src = b.input("x", "i16", 5, 24, space)  # type: ignore[arg-type]
    y = b.output("y", "i16", 5 * a.chip.cores, 24)
    bufs = {c: b.alloc(c, "i16", 5, 24) for c in b.cores}
    fan_out(b, src, list(bufs.items()))
    for c, buf in bufs.items():
        b.emit(c, "dma", View(y.space, y.addr + c * buf.nbytes, "i16", 5, 24, symbol="y",
                              offset=c * buf.nbytes), buf)  # fmt: skip
    x = codes(np.random.default_rng(1), (5, 24), 16).astype(np.int16)
    got = run(b, {"x": x})["y"]
    assert np.array_equal(got, np.tile(x, (a.chip.cores, 1)))
    instrs = _instrs(b)
    assert _reads(instrs, "x") == 1
    ops = [i for core in instrs.values() for i in core]
    assert not any(i.opcode == "send" for i in ops)
    mcasts = [i for i in ops if i.opcode == "mcast"]
    assert len(mcasts) == 1  # one message for all the others
    assert mcasts[0].operands[0] == CoreSet(tuple(c for c in b.cores if c != 0))
    assert sum(i.opcode == "recv" for i in ops) == a.chip.cores - 1


def test_the_loader_is_nearest_the_memory_port_and_prefers_a_relay() -> None:
    a = arch("large")
    src = View("gb", 0, "i8", 128, 768)
    cores = list(range(3, 40, 2))
    first = loader(a, cores)
    assert first in cores
    assert all(a.memory_hops(first) <= a.memory_hops(c) for c in cores)
    assert senders(a, src, cores) == {first}  # the others only receive
    assert loader(a, cores, [60, 9]) == 9
    assert senders(a, src, cores, [60]) == set()  # a relay loads: every destination a leaf


def test_multicast_is_declined_when_the_noc_is_slower_than_loading() -> None:
    a = arch("default")
    src = View("gb", 0, "i8", 64, 64)
    assert multicast_pays(a, src, [0, 1, 2, 3])
    assert not multicast_pays(a, src, [0])
    slow = replace(a, chip=replace(a.chip, noc_hop_cycles=100_000))
    assert not multicast_pays(slow, src, [0, 1, 2, 3])
    assert senders(slow, src, [0, 1, 2, 3]) == {0, 1, 2, 3}


def _linear_case(seed: int, t: int, k: int, n: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.2, (k, n))
    plan = plan_linear(w, rng.normal(0, 2.0, n), x_scale=0.05, out_scale=1.3, out_bits=8)
    x = codes(rng, (t, k), 8)
    return plan, x, recipes.linear(torch.from_numpy(x), plan)


def test_linear_x_is_loaded_once_per_k_span() -> None:
    """An n split over 4 cores: every core needs all of x, which is read from memory once."""
    plan, x, want = _linear_case(3, 6, 200, 500)
    b = ProgramBuilder(arch("default"))
    xv, yv = b.input("x", "i8", 6, 200), b.output("y", "i8", 6, 500)
    lower_linear(b, xv, yv, plan, split="n")
    assert_exact(run(b, {"x": x.astype(np.int8)})["y"], want)
    assert _reads(_instrs(b), "x") == 1


def test_k_groups_give_each_core_one_block_and_spread_homes() -> None:
    """x too wide for half a scratchpad: K groups per column block, one block per core."""
    a = arch("default")
    t, k, n = 64, 1024, 200  # x is 64 KiB: more than half of a 96 KiB scratchpad
    small = replace(a, core=replace(a.core, scratchpad_bytes=96 * 1024))
    slots = k_groups(ProgramBuilder(small), t, k, n)
    assert slots is not None
    blocks_of = {}
    for s in slots:
        blocks_of.setdefault(s.core, set()).add(s.n0)
    assert all(len(v) == 1 for v in blocks_of.values())
    assert len(blocks_of) == 4  # 2 column blocks x 2 K groups
    plan, x, want = _linear_case(5, t, k, n)
    b = ProgramBuilder(small)
    xv, yv = b.input("x", "i8", t, k), b.output("y", "i8", t, n)
    lower_linear(b, xv, yv, plan)  # auto: K split -> K groups
    assert_exact(run(b, {"x": x.astype(np.int8)})["y"], want)
    instrs = _instrs(b)
    partial_sums = {  # int32 messages: partial sums (x travels as int8)
        c
        for c, core in instrs.items()
        for i in core
        if i.opcode == "recv" and i.operands[1].dtype == "i32"  # type: ignore[union-attr]
    }
    assert len(partial_sums) == 2  # one home per column block, on different cores


def test_norm_constants_are_loaded_once_for_all_cores() -> None:
    rng = np.random.default_rng(7)
    n, r = 48, 13
    gain, beta = rng.uniform(0.5, 2.0, n), rng.normal(0, 0.5, n)
    plan = plan_norm(gain, beta, 1e-5, 0.02, 8, 0.05, 8)
    x = codes(rng, (r, n), 8)
    b = ProgramBuilder(arch("default"))
    xv, yv = b.input("x", "i8", r, n), b.output("y", "i8", r, n)
    lower_norm(b, xv, yv, plan, name="ln")
    assert_exact(run(b, {"x": x.astype(np.int8)})["y"], recipes.norm(torch.from_numpy(x), plan))
    instrs = _instrs(b)
    assert _reads(instrs, "ln.g") == 1 and _reads(instrs, "ln.b") == 1
    assert sum(bool(core) for core in instrs.values()) == 4  # rows still on every core


def test_plain_k_split_spreads_block_homes_over_cores() -> None:
    """Every core holds a K slice of every block: the blocks' homes (which receive and add
    the partial sums) are different cores, not all the core of the first K tile."""
    plan, x, want = _linear_case(9, 5, 520, 260)
    b = ProgramBuilder(arch("default"))
    xv, yv = b.input("x", "i8", 5, 520), b.output("y", "i8", 5, 260)
    lower_linear(b, xv, yv, plan, split="k")
    assert_exact(run(b, {"x": x.astype(np.int8)})["y"], want)
    homes = {
        c
        for c, core in _instrs(b).items()
        for i in core
        if i.opcode == "recv" and i.operands[1].dtype == "i32"  # type: ignore[union-attr]
    }
    assert len(homes) == 3  # 3 column blocks of 128, 3 homes


def test_an_idle_core_relays_x_so_tile_cores_only_receive() -> None:
    """On a chip with idle cores an idle core loads and multicasts x: the cores holding
    the tiles never send x, and write their tiles before waiting for it."""
    plan, x, want = _linear_case(4, 64, 256, 768)
    b = ProgramBuilder(arch("large"))
    xv, yv = b.input("x", "i8", 64, 256), b.output("y", "i8", 64, 768)
    lower_linear(b, xv, yv, plan, split="n")
    assert_exact(run(b, {"x": x.astype(np.int8)})["y"], want)
    instrs = _instrs(b)
    assert _reads(instrs, "x") == pieces(View("gb", 0, "i8", 64, 256))  # once, in pieces
    workers = {c for c, core in instrs.items() if any(i.opcode == "mvm" for i in core)}
    assert len(workers) == 6
    for c in workers:
        ops = [i.opcode for i in instrs[c]]
        assert "send" not in ops and "mcast" not in ops
        assert ops.index("mload") < ops.index("recv")  # tiles first, then wait for x
    relays = {c for c, core in instrs.items() if any(i.opcode == "mcast" for i in core)}
    assert len(relays) == 1 and not relays & workers


def test_multicast_pipelines_row_pieces_exactly() -> None:
    """The relay loads the block in row pieces and multicasts each as soon as it has it
    (after issuing the next piece's load); every destination only receives."""
    a = arch("large")
    b = ProgramBuilder(a)
    src = b.input("x", "i8", 64, 256, "gb")
    dests = {c: b.alloc(c, "i8", 64, 256) for c in (50, 51, 52, 53)}
    fan_out(b, src, list(dests.items()), (8, b.alloc(8, "i8", 64, 256)))
    y = b.output("y", "i8", 64 * 4, 256)
    for i, (c, buf) in enumerate(sorted(dests.items())):
        b.emit(c, "dma", sub(y, 64 * i, 64 * (i + 1)), buf)
    x = codes(np.random.default_rng(2), (64, 256), 8).astype(np.int8)
    assert np.array_equal(run(b, {"x": x})["y"], np.tile(x, (4, 1)))
    instrs = _instrs(b)
    n = pieces(src)
    assert n > 1 and _reads(instrs, "x") == n  # the block is loaded once, piece by piece
    relay_ops = [i.opcode for i in instrs[8]]
    # the next piece's load goes before each multicast
    assert relay_ops == ["dma"] + ["dma", "mcast"] * (n - 1) + ["mcast", "halt"]
    for c in dests:
        assert [i.opcode for i in instrs[c]].count("recv") == n
        assert not any(i.opcode in ("send", "mcast") for i in instrs[c])
