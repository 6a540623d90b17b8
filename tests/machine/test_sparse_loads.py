"""The data-dependent loads: nzidx, gather.m, mload.m, mload.t.m, dma.m — semantics, errors,
run-time cost."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cimc.errors import CimcError
from cimc.machine.arch import load_arch
from cimc.machine.cost import instr_cost
from cimc.machine.interpreter import run_program
from cimc.machine.parser import parse_program
from cimc.machine.schedule import simulate
from cimc.machine.validator import validate

RNG = np.random.default_rng(23)
TINY, DEFAULT = load_arch("tiny"), load_arch("default")

SPARSE = """.arch tiny
.const   w              {space}[0x0]      i8[32x8]
.input   x              dram[0x1000]      i8[{t}x32]
.output  y              dram[0x2000]      i32[{t}x8]

.core 0
  dma      sp[0x0]:i8[{t}x32], dram[x]:i8[{t}x32]
  nzidx    sp[0x100]:i16[32x1], sp[0x0]:i8[{t}x32]
  transpose sp[0x200]:i8[32x{t}], sp[0x0]:i8[{t}x32]
  gather.m sp[0x400]:i8[32x{t}], sp[0x200]:i8[32x{t}], sp[0x100]:i16[32x1]
  transpose sp[0x600]:i8[{t}x32], sp[0x400]:i8[32x{t}]
  gather.m sp[0x800]:i8[32x8], {space}[w]:i8[32x8], sp[0x100]:i16[32x1]
  mload.m  m0, sp[0x800]:i8[32x8], sp[0x100]:i16[32x1]
  mvm      sp[0xc00]:i32[{t}x8], sp[0x600]:i8[{t}x32], m0
  dma      dram[y]:i32[{t}x8], sp[0xc00]:i32[{t}x8]
  halt
"""


def _run(text: str, **inputs: np.ndarray):
    program = parse_program(text, "s.cimasm")
    validate(program, TINY)
    consts = {"w": inputs.pop("w")}
    return program, run_program(program, TINY, inputs, consts)


@pytest.mark.parametrize("tokens", [1, 3])
@pytest.mark.parametrize("space", ["dram", "flash"])
def test_packed_product_equals_dense(tokens: int, space: str) -> None:
    """Only the columns some token uses are packed, and the product stays x @ w exactly."""
    w = RNG.integers(-127, 128, (32, 8)).astype(np.int8)
    x = RNG.integers(-128, 128, (tokens, 32)).astype(np.int8)
    x[:, RNG.random(32) < 0.7] = 0
    program, run = _run(SPARSE.format(t=tokens, space=space), x=x, w=w)
    np.testing.assert_array_equal(run.outputs["y"], x.astype(np.int64) @ w.astype(np.int64))
    active = np.flatnonzero((x != 0).any(axis=0))
    index = run.dynamic[(0, 5)]  # the weight gather.m
    np.testing.assert_array_equal(index[: active.size], active)
    assert (index[active.size :] == -1).all()


def test_mload_masked_keeps_skipped_rows() -> None:
    text = """.arch tiny
.input   a              dram[0x0]       i8[4x4]
.input   b              dram[0x100]     i8[4x4]
.input   i              dram[0x200]     i32[4x1]
.input   x              dram[0x300]     i8[1x4]
.output  y              dram[0x400]     i32[1x4]

.core 0
  dma      sp[0x0]:i8[4x4], dram[a]:i8[4x4]
  dma      sp[0x20]:i8[4x4], dram[b]:i8[4x4]
  dma      sp[0x40]:i32[4x1], dram[i]:i32[4x1]
  dma      sp[0x60]:i8[1x4], dram[x]:i8[1x4]
  mload    m1, sp[0x0]:i8[4x4]
  mload.m  m1, sp[0x20]:i8[4x4], sp[0x40]:i32[4x1]
  mvm      sp[0x80]:i32[1x4], sp[0x60]:i8[1x4], m1
  dma      dram[y]:i32[1x4], sp[0x80]:i32[1x4]
  halt
"""
    a, b = (RNG.integers(-127, 128, (4, 4)).astype(np.int8) for _ in range(2))
    x = RNG.integers(-128, 128, (1, 4)).astype(np.int8)
    idx = np.array([[-1], [7], [-5], [0]], np.int32)  # any non-negative value takes the row
    program = parse_program(text, "k.cimasm")
    out = run_program(program, TINY, {"a": a, "b": b, "i": idx, "x": x}, {})
    want = np.where(idx >= 0, b, a).astype(np.int64)
    np.testing.assert_array_equal(out.outputs["y"], x.astype(np.int64) @ want)


def test_mload_transposed_masked_writes_the_named_columns_only() -> None:
    text = """.arch tiny
.input   a              dram[0x0]       i8[4x6]
.input   b              dram[0x100]     i8[6x4]
.input   i              dram[0x200]     i16[6x1]
.input   x              dram[0x300]     i8[2x4]
.output  y              dram[0x400]     i32[2x6]

.core 0
  dma      sp[0x0]:i8[4x6], dram[a]:i8[4x6]
  dma      sp[0x20]:i8[6x4], dram[b]:i8[6x4]
  dma      sp[0x40]:i16[6x1], dram[i]:i16[6x1]
  dma      sp[0x60]:i8[2x4], dram[x]:i8[2x4]
  mload    m2[0:4,1:7], sp[0x0]:i8[4x6]
  mload.t.m m2[0:4,1:7], sp[0x20]:i8[6x4], sp[0x40]:i16[6x1]
  mvm      sp[0x80]:i32[2x6], sp[0x60]:i8[2x4], m2[0:4,1:7]
  dma      dram[y]:i32[2x6], sp[0x80]:i32[2x6]
  halt
"""
    a = RNG.integers(-127, 128, (4, 6)).astype(np.int8)
    b = RNG.integers(-127, 128, (6, 4)).astype(np.int8)  # neuron-major: row j = column j
    x = RNG.integers(-128, 128, (2, 4)).astype(np.int8)
    idx = np.array([[5], [-1], [2], [-3], [0], [1]], np.int16)
    program = parse_program(text, "t.cimasm")
    validate(program, TINY)
    out = run_program(program, TINY, {"a": a, "b": b, "i": idx, "x": x}, {})
    want = np.where(idx[:, 0] >= 0, b.T, a).astype(np.int64)
    np.testing.assert_array_equal(out.outputs["y"], x.astype(np.int64) @ want)
    (pc,) = [pc for pc, i in enumerate(program.cores[0].instrs) if i.opcode == "mload.t.m"]
    named = out.dynamic[(0, pc)]
    instr = program.cores[0].instrs[pc]
    full = instr_cost(instr, 0, TINY)  # no record: every column counts
    run = instr_cost(instr, 0, TINY, named)
    moved = {m[2] for m in run.moved}
    assert moved == {4 * 4} and {m[2] for m in full.moved} == {6 * 4}
    assert run.energy.total < full.energy.total


def test_mload_masked_counts_as_written_and_never_written_rows_are_zero() -> None:
    text = """.arch tiny
.input   i              dram[0x0]       i32[2x1]
.output  y              dram[0x100]     i32[1x2]

.core 0
  dma      sp[0x0]:i32[2x1], dram[i]:i32[2x1]
  fill     sp[0x10]:i8[2x2], 3
  fill     sp[0x20]:i8[1x2], 1
  mload.m  m0, sp[0x10]:i8[2x2], sp[0x0]:i32[2x1]
  mvm      sp[0x40]:i32[1x2], sp[0x20]:i8[1x2], m0
  dma      dram[y]:i32[1x2], sp[0x40]:i32[1x2]
  halt
"""
    program = parse_program(text, "z.cimasm")
    validate(program, TINY)  # mload.m wrote the window, statically
    out = run_program(program, TINY, {"i": np.array([[-1], [1]], np.int32)}, {})
    np.testing.assert_array_equal(out.outputs["y"], [[3, 3]])  # row 0 is the reset 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("gather.m sp[0x40]:i8[2x4], dram[t]:i8[4x4], sp[0x0]:i32[2x1]", "index 4 in row 1"),
        ("dma.m sp[0x40]:i8[4x4], dram[t]:i8[4x4], sp[0x0]:i32[2x1]", "index 4 in row 1"),
    ],
)
def test_index_beyond_the_rows_is_an_error(line: str, message: str) -> None:
    text = f""".arch tiny
.input   t              dram[0x0]       i8[4x4]
.input   i              dram[0x100]     i32[2x1]

.core 0
  dma      sp[0x0]:i32[2x1], dram[i]:i32[2x1]
  {line}
  halt
"""
    program = parse_program(text, "e.cimasm")
    inputs = {"t": np.zeros((4, 4), np.int8), "i": np.array([[-1], [4]], np.int32)}
    with pytest.raises(CimcError, match=rf"e.cimasm:7:3: core 0: .*{message}"):
        run_program(program, TINY, inputs, {})


def test_nzidx_needs_room_for_every_column() -> None:
    with pytest.raises(CimcError, match="i16 cannot hold column number 40000"):
        parse_program(
            ".arch default\n\n.core 0\n  nzidx sp[0x0]:i16[40001x1], sp[0x20000]:i8[1x40001]\n"
            "  halt\n",
            "n.cimasm",
        )


def _instr(line: str):
    program = parse_program(f".arch default\n\n.core 0\n  {line}\n  halt\n", "c.cimasm")
    return program.cores[0].instrs[0]


def test_gather_masked_costs_only_the_named_rows() -> None:
    g = _instr("gather.m sp[0x0]:i8[16x128], dram[0x0]:i8[1024x128/512], sp[0x4000]:i16[16x1]")
    index = np.array([5, 6, 900, *([-1] * 13)])
    run = instr_cost(g, 0, DEFAULT, index)
    dense = instr_cost(g, 0, DEFAULT)
    assert run.moved == (("dram", "sp", 3 * 128),) and dense.moved == (("dram", "sp", 16 * 128),)
    assert run.data_cycles == math.ceil(3 * 128 / 8) and run.lead == 16 + 100 + 1
    assert run.energy.dram == pytest.approx(3 * 128 * 60)
    none = instr_cost(g, 0, DEFAULT, np.full(16, -1))
    assert (none.cycles, none.moved, none.channels) == (16, (), ())


def test_gather_masked_from_flash_reads_each_chunk_once() -> None:
    # rows of 1 KiB in 32 KiB chunks: rows 0, 1 and 31 share chunk 0; row 32 is in chunk 1
    g = _instr("gather.m sp[0x0]:i8[4x1024], flash[0x0]:i8[64x1024], sp[0x2000]:i32[4x1]")
    c = instr_cost(g, 0, DEFAULT, np.array([0, 1, 31, 32]))
    assert c.held(0) == math.ceil(2 * 32768 / 7.5) and c.channels[0] == "flash"
    assert c.energy.flash == pytest.approx(4 * 1024 * 250)  # energy: the bytes moved
    static = instr_cost(g, 0, DEFAULT)  # no record: each row its own chunks, at most 2
    assert static.held(0) == math.ceil(2 * 32768 / 7.5)


def test_run_schedule_prices_the_recorded_rows() -> None:
    """The schedule of a run with few active columns is shorter than the static one."""
    w = RNG.integers(-127, 128, (32, 8)).astype(np.int8)
    x = np.zeros((1, 32), np.int8)
    x[0, [3, 17]] = [5, -9]
    program, run = _run(SPARSE.format(t=1, space="dram"), x=x, w=w)
    static, dynamic = simulate(program, TINY), simulate(program, TINY, dynamic=run.dynamic)
    moved = {i.instr.opcode: i.cost.moved for i in dynamic.items if i.pc in (5, 6)}
    assert moved == {"gather.m": (("dram", "sp", 16),), "mload.m": (("sp", "macro", 16),)}
    assert dynamic.makespan < static.makespan


def test_dma_masked_copies_the_named_rows_in_place() -> None:
    """Named rows land at their own row numbers; the other rows keep what they held."""
    text = """.arch tiny
.const   w              flash[0x0]      i8[8x4]
.state   c              dram[0x0]       i8[8x4]
.input   i              dram[0x100]     i32[3x1]

.core 0
  dma      sp[0x0]:i32[3x1], dram[i]:i32[3x1]
  dma.m    dram[c]:i8[8x4], flash[w]:i8[8x4], sp[0x0]:i32[3x1]
  halt
"""
    program = parse_program(text, "m.cimasm")
    validate(program, TINY)
    w = RNG.integers(-127, 128, (8, 4)).astype(np.int8)
    old = np.full((8, 4), 9, np.int8)
    index = np.array([[5], [-1], [2]], np.int32)
    run = run_program(program, TINY, {"i": index}, {"w": w}, state={"c": old})
    want = old.copy()
    want[[5, 2]] = w[[5, 2]]
    np.testing.assert_array_equal(run.state["c"], want)
    np.testing.assert_array_equal(run.dynamic[(0, 1)], [5, -1, 2])


def test_dma_masked_costs_the_distinct_named_rows() -> None:
    # rows of 1 KiB in 32 KiB chunks: rows 0 and 31 share chunk 0, row 40 is in chunk 1
    g = _instr("dma.m dram[0x0]:i8[64x1024], flash[0x0]:i8[64x1024], sp[0x0]:i32[5x1]")
    c = instr_cost(g, 0, DEFAULT, np.array([0, 31, -1, 40, 0]))
    assert c.moved == (("flash", "dram", 3 * 1024),)
    assert c.channels == ("dram", "flash") and c.held(1) == math.ceil(2 * 32768 / 7.5)
    static = instr_cost(g, 0, DEFAULT)  # no record: five rows, each its own chunks
    assert static.moved == (("flash", "dram", 5 * 1024),)
    none = instr_cost(g, 0, DEFAULT, np.full(5, -1))
    assert (none.cycles, none.moved) == (16, ())


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("dma.m sp[0x0]:i8[8x4], sp[0x40]:i8[4x4], sp[0x80]:i32[2x1]", "source must be 8x4"),
        ("dma.m sp[0x0]:i8[8x4], sp[0x40]:i16[8x4], sp[0x80]:i32[2x1]", "dtype"),
        ("dma.m sp[0x0]:i8[8x4], sp[0x40]:i8[8x4], sp[0x80]:i32[2x2]", "index must be n x 1"),
        ("dma.m flash[0x0]:i8[8x4], sp[0x40]:i8[8x4], sp[0x80]:i32[2x1]", "flash"),
    ],
)
def test_dma_masked_operands_are_checked_statically(line: str, message: str) -> None:
    with pytest.raises(CimcError, match=message):
        parse_program(f".arch tiny\n\n.core 0\n  {line}\n  halt\n", "d.cimasm")
