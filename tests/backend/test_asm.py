"""The program builder: allocation, declarations, macro residency, files (cross-core
ordering: test_asm_sync.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cimc.backend.builder.alloc import Allocator, cols, fit_dtype, reshape, split_even, sub
from cimc.backend.builder.asm import ProgramBuilder, views_overlap
from cimc.errors import CimcError
from cimc.machine.interpreter import run_program
from cimc.machine.parser import load_program
from cimc.machine.program import View
from cimc.machine.validator import validate
from tests.backend.lower_harness import arch


def test_allocator_first_fit_reuses_and_coalesces() -> None:
    a = Allocator("sp", 256, "core.scratchpad_bytes")
    x, y, z = a.alloc(64), a.alloc(64), a.alloc(64)
    assert (x, y, z) == (0, 64, 128)
    a.free(x)
    a.free(y)
    assert a.largest_free() == 128  # the two freed blocks merged
    assert a.alloc(100) == 0
    with pytest.raises(CimcError, match="is full"):
        a.alloc(200)
    with pytest.raises(ValueError, match="double free"):
        a.free(64)


def test_reserved_top_stays_out_of_allocation_and_errors_count_the_whole_memory() -> None:
    a = Allocator("sp", 256, field="core.scratchpad_bytes")
    assert a.reserve_top(8) == 248
    assert a.alloc(248) == 0
    a.free(0)
    want = r"largest free block 248 of 256\); raise arch field '\S+' to at least 264"
    with pytest.raises(CimcError, match=want):
        a.alloc(256)


def test_view_helpers() -> None:
    v = View("dram", 0x100, "i16", 4, 10, symbol="x", offset=0)
    s = sub(v, 1, 3, 2, 5)
    assert (s.addr, s.rows, s.cols, s.stride, s.offset) == (0x100 + 24, 2, 3, 10, 24)
    assert cols(v, 4, 10).addr == 0x108
    assert reshape(View("sp", 0, "i8", 2, 6), 12, 1).shape == (12, 1)
    assert fit_dtype(np.array([-129, 5])) == "i16" and fit_dtype(7, "i32") == "i32"
    assert split_even(7, 3) == [(0, 3), (3, 5), (5, 7)]


def test_views_overlap_is_exact_for_strided_columns() -> None:
    left = View("dram", 0, "i8", 4, 8, stride=16)
    right = View("dram", 8, "i8", 4, 8, stride=16)
    assert not views_overlap(left, right)
    assert views_overlap(left, View("dram", 20, "i8", 1, 1))
    assert not views_overlap(left, View("gb", 0, "i8", 4, 8))


def test_mload_skips_resident_static_tiles_only() -> None:
    b = ProgramBuilder(arch("tiny"))
    w = b.alloc(0, "i8", 8, 8)
    b.mload(0, 1, 0, 0, w, key="w")
    b.mload(0, 1, 0, 0, w, key="w")  # resident: skipped
    b.mload(0, 1, 0, 0, w)  # run-time data: always written
    b.mload(0, 1, 4, 4, sub(w, 0, 4, 0, 4), key="v")  # overlaps: evicts "w"
    b.mload(0, 1, 0, 0, w, key="w")
    program, _ = b.build()
    assert [i.opcode for i in program.instrs(0)].count("mload") == 4


def test_const_declared_twice() -> None:
    b = ProgramBuilder(arch("tiny"))
    v = b.const("c", np.arange(4))
    assert b.const("c", np.arange(4)) == v
    with pytest.raises(CimcError, match="declared twice with different data"):
        b.const("c", np.arange(1, 5))
    with pytest.raises(CimcError, match="does not fit i8"):
        b.const("d", np.array([300]), "i8")


def test_write_files_and_run_from_disk(tmp_path: Path) -> None:
    b = ProgramBuilder(arch("tiny"), cores=[0])
    c = b.const("k", np.full((1, 4), 3), "i32")
    x, y = b.input("x", "i32", 1, 4), b.output("y", "i32", 1, 4)
    with b.scratch(0) as sc, b.at("/add3"):
        xs, cs = sc("i32", 1, 4), sc("i32", 1, 4)
        b.emit(0, "dma", xs, x)
        b.emit(0, "dma", cs, c)
        b.emit(0, "add", xs, xs, cs)
        b.emit(0, "dma", y, xs)
    _, asm, consts = b.write(tmp_path / "p.cimasm")
    assert consts is not None and consts.exists()
    program = load_program(asm)
    validate(program, b.arch)
    assert "; /add3" in asm.read_text()
    out = run_program(program, b.arch, {"x": np.arange(4, dtype=np.int32)})
    assert out.outputs["y"].tolist() == [[3, 4, 5, 6]]


def test_bad_instruction_is_reported_with_the_location() -> None:
    b = ProgramBuilder(arch("tiny"))
    with b.at("/node"), pytest.raises(CimcError, match="/node: internal lowering error"):
        b.emit(0, "add", b.alloc(0, "i8", 2, 2), b.alloc(0, "i8", 3, 2), 1)


def test_instruction_count_is_the_streams_instructions() -> None:
    """The running count (lowerings compare it to see whether anything was emitted) equals
    the instructions in the streams: tokens, barriers and a late core's barriers included,
    comments not."""
    b = ProgramBuilder(arch("default"))
    x, t = b.input("x", "i8", 2, 16), b.region("t", "i8", 2, 16)
    b.note("a comment", core=0)
    b.emit(0, "dma", cols(t, 0, 8), b.alloc(0, "i8", 2, 8))
    b.emit(1, "dma", b.alloc(1, "i8", 2, 8), cols(t, 0, 8))  # after core 0's write: a token
    b.barrier()
    b.alloc(2, "i8", 1, 1)  # core 2 joins: the barrier is prepended
    b.emit(2, "dma", b.alloc(2, "i8", 2, 16), x)
    program, _ = b.build()
    streams = [program.instrs(c) for c in (0, 1, 2)]
    assert sum(len(s) - 1 for s in streams) == b.instruction_count() == 8  # less the halts
