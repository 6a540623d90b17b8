"""Printer: canonical text round-trips both ways, for hand-written and generated programs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from cimc.errors import CimcError
from cimc.machine.arch import load_arch
from cimc.machine.opcodes import OPCODES
from cimc.machine.parser import parse_program
from cimc.machine.printer import COMMENT_COL, print_program, print_view
from cimc.machine.program import Comment, CoreStream, Decl, Imm, Instr, Program, View
from cimc.machine.validator import validate
from cimc.resources import isa_dir
from tests.machine.strategies import (
    BUILDERS,
    STRUCTURAL,
    TINY,
    TINY_COLS,
    TINY_MACROS,
    TINY_ROWS,
    programs,
)

CANONICAL = """\
.arch tiny
.consts tiny.safetensors
; weights first
.const   w               flash[0x0]      i8[32x32]              ; /fc/weight
.input   x               dram[0x1000]    i8[7x32]
.output  y               dram[0x2000]    i8[7x32]
.region  kv              gb[0x0]         4096

.core 0
  ; layer 0
  dma      sp[0x0]:i8[7x32], dram[x]:i8[7x32]                   ; /embed
  dma      sp[0x400]:i8[32x32], flash[w]:i8[32x32]
  mload    m0, sp[0x400]:i8[32x32]                              ; /fc
  mload.t  m1[0:16,8:40], sp[0x800]:i8[32x16/20]
  mvm      sp[0x1000]:i32[7x32], sp[0x0]:i8[7x32], m0           ; /fc
  mvm.acc  sp[0x1000]:i32[7x32], sp[0x0]:i8[7x32], m0[0:32,0:32]
  req      sp[0x2000]:i8[7x32], sp[0x1000]:i32[7x32], 1073741824, 31, sp[0x3000]:i8[1x32], -128, 127
  dma      gb[kv+0x100]:i8[7x32], sp[0x2000]:i8[7x32]
  send     1, sp[0x2000]:i8[7x32], 5
  barrier
  halt

.core 1
  recv     0, sp[0x0]:i8[7x32], 5
  barrier
  dma      dram[y]:i8[7x32], sp[0x0]:i8[7x32]
  halt
"""


def test_canonical_text_round_trips_exactly() -> None:
    program = parse_program(CANONICAL, "c.cimasm")
    assert print_program(program) == CANONICAL


def test_canonical_text_is_a_valid_tiny_program_except_window() -> None:
    # m1[0:16,8:40] runs past the 32 columns of tiny's macros: the printer does not care,
    # the validator does.
    program = parse_program(CANONICAL, "c.cimasm")
    with pytest.raises(CimcError, match=r"c.cimasm:14:12: core 0: window m1\[0:16,8:40\] exceeds"):
        validate(program, load_arch("tiny"))


def test_non_canonical_spacing_and_hex_are_normalized() -> None:
    messy = (
        ".arch   tiny ;c\n\n\n.core 0\n  add sp[0x1A]:i8[2x3/3],sp[26]:i8[2x3], +5   ;  n  \n"
        "  halt\n"
    )
    program = parse_program(messy)
    body = "  add      sp[0x1a]:i8[2x3], sp[0x1a]:i8[2x3], 5"
    text = print_program(program)
    assert text == f".arch tiny\n; c\n\n.core 0\n{body.ljust(COMMENT_COL)}; n\n  halt\n"
    assert text.splitlines()[4].index(";") == COMMENT_COL  # the fixed comment column


def test_symbolic_addresses_are_resolved_and_kept() -> None:
    program = parse_program(CANONICAL)
    dma = program.instrs(0)[7]
    dst = dma.operands[0]
    assert isinstance(dst, View)
    assert (dst.space, dst.addr, dst.symbol, dst.offset) == ("gb", 0x100, "kv", 0x100)
    assert print_view(dst) == "gb[kv+0x100]:i8[7x32]"


def test_bare_macro_is_sized_from_operands() -> None:
    program = parse_program(CANONICAL)
    mvm = program.instrs(0)[4]
    macro = mvm.operands[2]
    assert macro == replace(macro, r0=0, r1=32, c0=0, c1=32, whole=True)
    mload_t = program.instrs(0)[3]
    assert mload_t.operands[0].shape == (16, 32)  # type: ignore[union-attr]


def test_positions_do_not_affect_equality() -> None:
    a = Instr("fill", (View("sp", 0, "i8", 1, 1, 1), Imm(3)), None, line=1, col=1)
    b = Instr("fill", (View("sp", 0, "i8", 1, 1, 1), Imm(3)), None, line=9, col=4)
    assert a == b


def test_generator_covers_every_opcode() -> None:
    assert set(BUILDERS) | set(STRUCTURAL) == set(OPCODES)


def test_generator_sizes_match_the_tiny_preset() -> None:
    arch = load_arch("tiny")
    assert {s: arch.space_bytes(s) for s in TINY} == TINY
    assert (arch.core.macros, arch.macro.rows, arch.macro.cols) == (
        TINY_MACROS,
        TINY_ROWS,
        TINY_COLS,
    )


_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(programs())
def test_parse_of_print_is_identity(program) -> None:  # type: ignore[no-untyped-def]
    text = print_program(program)
    again = parse_program(text, "gen.cimasm")
    assert again == program
    assert print_program(again) == text


@_SETTINGS
@given(programs())
def test_generated_programs_are_valid_for_tiny(program) -> None:  # type: ignore[no-untyped-def]
    validate(parse_program(print_program(program)), load_arch("tiny"))


EXAMPLES = sorted((isa_dir() / "examples").glob("*.cimasm"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_shipped_examples_are_canonical_and_valid(path: Path) -> None:
    text = path.read_text()
    program = parse_program(text, str(path))
    assert print_program(program) == text
    validate(program, load_arch(program.arch_name))


def test_comments_are_kept_on_one_line_and_bad_names_refused() -> None:
    fill = Instr("fill", (View("sp", 0, "i8", 1, 1, 1), Imm(3)), "a\nb ")
    program = Program("tiny", None, (Comment("x\ny"),), (CoreStream(0, (fill,)),))
    text = print_program(program)
    assert text.splitlines()[1] == "; x y" and text.splitlines()[-1].endswith("; a b")
    bad = Decl("input", "onnx::x", "dram", 0, "i8", 1, 1, 1)
    with pytest.raises(CimcError, match="declaration name 'onnx::x' cannot be written"):
        print_program(Program("tiny", None, (bad,), ()))
    with pytest.raises(CimcError, match="constants path 'a b' cannot be written"):
        print_program(Program("tiny", "a b", (), ()))
