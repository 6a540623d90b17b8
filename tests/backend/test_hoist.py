"""Constant loads moved up their core's stream (cimc/backend/program_passes/hoist.py):
where they stop, and that the moved program computes the same bytes."""

from __future__ import annotations

import numpy as np

from cimc.backend.program_passes.hoist import hoist_const_loads
from cimc.backend.stream.prefetch import IMAGE
from cimc.machine.arch import load_arch
from cimc.machine.interpreter import run_program
from cimc.machine.parser import load_program, parse_program
from cimc.machine.program import Instr, Program
from cimc.machine.schedule import simulate
from cimc.machine.validator import validate
from cimc.resources import isa_dir

TINY = load_arch("tiny")


def _stream(program: Program, core: int) -> list[str]:
    """Each instruction as `opcode first-source-symbol-or-space`."""
    out = []
    for i in program.instrs(core):
        views = [v for v in i.operands[1:] if hasattr(v, "space")]
        src = (views[0].symbol or views[0].space) if views else "-"
        out.append(f"{i.opcode} {src}")
    return out


def test_example_loads_move_to_the_top_in_order_and_compute_the_same() -> None:
    path = isa_dir() / "examples" / "matmul_2core.cimasm"
    program = load_program(path)
    moved = hoist_const_loads(program)
    # core 0: w (flash), b and mult (dram constants) go above the input load of x, in
    # their order; x is an input (written by the host), so it stays
    assert _stream(moved, 0)[:5] == ["dma w", "dma b", "dma mult", "dma x", "mload sp"]
    assert _stream(moved, 1)[:3] == ["dma w", "dma x", "mload sp"]
    assert sorted(map(str, moved.instrs(0))) == sorted(map(str, program.instrs(0)))
    validate(moved, TINY)
    inputs = dict(np.load(path.with_suffix(".inputs.npz"), allow_pickle=False))
    before = run_program(program, TINY, inputs).outputs["y"]
    after = run_program(moved, TINY, inputs, consts=None).outputs["y"]
    np.testing.assert_array_equal(after, before)
    assert simulate(moved, TINY).makespan < simulate(program, TINY).makespan


HEADER = """.arch tiny
.const   c               dram[0x0]       i32[1x32]
.const   t               dram[0x100]     i8[16x32]
.input   x               dram[0x1000]    i32[1x32]
.output  y               dram[0x2000]    i32[1x32]
"""


def _hoisted(body: str, limit: int | None = None) -> list[str]:
    program = parse_program(HEADER + "\n.core 0\n" + body + "  halt\n")
    validate(program, TINY)
    moved = hoist_const_loads(program) if limit is None else hoist_const_loads(program, limit)
    validate(moved, TINY)
    return [str(i.comment) for i in moved.instrs(0) if isinstance(i, Instr)][:-1]


def test_a_load_stops_below_a_reader_or_writer_of_its_destination() -> None:
    body = """\
  dma      sp[0x0]:i32[1x32], dram[x]:i32[1x32]                 ; a
  add      sp[0x200]:i32[1x32], sp[0x0]:i32[1x32], 1            ; writes 0x200
  add      sp[0x400]:i32[1x32], sp[0x0]:i32[1x32], 2            ; b
  dma      sp[0x200]:i32[1x32], dram[c]:i32[1x32]               ; load
  dma      dram[y]:i32[1x32], sp[0x200]:i32[1x32]               ; out
"""
    # the load overwrites 0x200, which the first add writes: it may only pass the second add
    assert _hoisted(body) == ["a", "writes 0x200", "load", "b", "out"]
    war = body.replace("sp[0x400]:i32[1x32], sp[0x0]", "sp[0x400]:i32[1x32], sp[0x200]")
    assert _hoisted(war) == ["a", "writes 0x200", "b", "load", "out"]


def test_a_gather_stops_below_the_writer_of_its_index() -> None:
    body = """\
  dma      sp[0x0]:i32[1x32], dram[x]:i32[1x32]                 ; a
  add      sp[0x80]:i32[4x1], sp[0x0]:i32[4x1], 0               ; index
  add      sp[0x400]:i32[1x32], sp[0x0]:i32[1x32], 2            ; b
  gather   sp[0x200]:i8[4x32], dram[t]:i8[16x32], sp[0x80]:i32[4x1] ; load
  dma      dram[y]:i32[1x32], sp[0x400]:i32[1x32]               ; out
"""
    assert _hoisted(body) == ["a", "index", "load", "b", "out"]


def test_the_scan_is_bounded() -> None:
    body = "".join(
        f"  add      sp[0x{0x400 + 0x80 * k:x}]:i32[1x32], sp[0x0]:i32[1x32], {k} ; op{k}\n"
        for k in range(4)
    )
    body += "  dma      sp[0x200]:i32[1x32], dram[c]:i32[1x32]               ; load\n"
    assert _hoisted(body, limit=2) == ["op0", "op1", "load", "op2", "op3"]
    assert _hoisted(body)[0] == "load"


def test_a_weight_piece_moves_only_to_the_top_of_the_node_above_it() -> None:
    header = HEADER + f".const   {IMAGE}     dram[0x3000]    i8[1x64]\n"
    body = f"""\
  add      sp[0x400]:i32[1x32], sp[0x0]:i32[1x32], 1            ; %first
  add      sp[0x480]:i32[1x32], sp[0x0]:i32[1x32], 2            ; %second
  add      sp[0x500]:i32[1x32], sp[0x0]:i32[1x32], 3            ; %second
  dma      sp[0x600]:i8[1x64], dram[{IMAGE}]:i8[1x64]           ; %layer
  add      sp[0x580]:i32[1x32], sp[0x0]:i32[1x32], 4            ; %second
  dma      sp[0x700]:i8[1x64], dram[{IMAGE}]:i8[1x64]           ; %layer
"""
    program = parse_program(header + "\n.core 0\n" + body + "  halt\n")
    moved = hoist_const_loads(program)
    order = [str(i.comment) + (" dma" if i.opcode == "dma" else "") for i in moved.instrs(0)]
    # the first piece passes %second's two adds, not %first's; the second piece passes
    # the add of %second, then stops at the first piece (loads keep their order)
    assert order[:-1] == ["%first", "%layer dma", "%layer dma", "%second", "%second", "%second"]


def test_a_weight_piece_does_not_pass_a_barrier() -> None:
    header = HEADER + f".const   {IMAGE}     dram[0x3000]    i8[1x64]\n"
    body = f"""\
  add      sp[0x400]:i32[1x32], sp[0x0]:i32[1x32], 1            ; %first
  barrier
  dma      sp[0x600]:i8[1x64], dram[{IMAGE}]:i8[1x64]           ; %layer
  add      sp[0x480]:i32[1x32], sp[0x0]:i32[1x32], 2            ; %second
  dma      sp[0x200]:i32[1x32], dram[c]:i32[1x32]               ; %load
"""
    program = parse_program(header + "\n.core 0\n" + body + "  halt\n")
    validate(program, TINY)
    moved = hoist_const_loads(program)
    validate(moved, TINY)
    order = [i.opcode + (f" {i.comment}" if i.comment else "") for i in moved.instrs(0)]
    # the barrier alone would be a block the piece may pass (its comment names no other
    # node), but a piece stays below it; the constant load passes %second's add and stops
    # at the piece (loads keep their order)
    assert order[:-1] == ["add %first", "barrier", "dma %layer", "dma %load", "add %second"]
