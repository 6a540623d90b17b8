"""Equal views are one object in a program (parser and ProgramBuilder), so the interpreter,
which builds a view's array once per object and run, builds it once per distinct view."""

from __future__ import annotations

from cimc.backend.builder.asm import ProgramBuilder
from cimc.machine.arch import load_arch
from cimc.machine.parser import parse_program
from cimc.machine.program import View

TEXT = """.arch tiny
.core 0
  fill     sp[0x0]:i32[2x4], 3
  add      sp[0x0]:i32[2x4], sp[0x0]:i32[2x4], sp[0x20]:i32[2x4]
  mul      sp[0x20]:i32[2x4], sp[0x0]:i32[2x4], 2
  halt
"""


def test_parser_makes_equal_views_one_object() -> None:
    fill, add, mul = parse_program(TEXT).cores[0].instrs[:3]
    a = fill.operands[0]
    assert add.operands[0] is a and add.operands[1] is a and mul.operands[1] is a
    assert mul.operands[0] is add.operands[2]
    assert mul.operands[0] is not a  # a different address stays a different view


def test_builder_makes_equal_views_one_object() -> None:
    b = ProgramBuilder(load_arch("tiny"))
    first, again = View("sp", 0, "i32", 2, 4), View("sp", 0, "i32", 2, 4)
    assert first == again and first is not again
    b.emit(0, "fill", first, 3)
    b.emit(0, "mul", again, again, 2)
    b.emit(0, "fill", View("sp", 0, "i32", 1, 4), 1)  # another shape: another view
    program, _ = b.build()
    fill, mul, short = program.cores[0].instrs[:3]
    assert mul.operands[0] is fill.operands[0] and mul.operands[1] is fill.operands[0]
    assert short.operands[0] is not fill.operands[0]
