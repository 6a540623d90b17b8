"""Parser: structure, symbols, operand checks and the wording/location of its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from cimc.errors import CimcError
from cimc.machine.parser import lark_tree, load_program, parse_program
from cimc.machine.program import Comment, Decl, Imm, MacroRef, View


def _err(text: str) -> str:
    with pytest.raises(CimcError) as info:
        parse_program(text, "p.cimasm")
    return str(info.value)


def test_program_structure_and_lookups() -> None:
    program = parse_program(
        "; banner\n.arch tiny ; target\n.consts w.safetensors\n"
        ".const w flash[0x40] i16[2x3] ; weight\n.region kv gb[0x100] 64\n"
        ".core 1 ; second\n  halt\n.core 0\n  ; lead\n  fill sp[0x0]:i8[1x4], -3\n  halt\n",
        "p.cimasm",
    )
    assert program.arch_name == "tiny" and program.consts_file == "w.safetensors"
    assert program.consts_line == 3
    assert program.header[:2] == (Comment("banner"), Comment("target"))
    w = program.decl("w")
    assert w == Decl("const", "w", "flash", 0x40, "i16", 2, 3, 12, "weight")
    assert (w.line, w.col, w.end) == (4, 1, 0x4C)
    kv = program.decl("kv")
    assert kv is not None and (kv.dtype, kv.nbytes, kv.shape) == (None, 64, None)
    assert [s.core for s in program.cores] == [1, 0]  # source order is kept
    assert program.core(1).items[0] == Comment("second")  # type: ignore[union-attr]
    fill = program.instrs(0)[0]
    assert fill.operands == (View("sp", 0, "i8", 1, 4, 4), Imm(-3))
    assert (fill.line, fill.col, fill.operand_cols) == (10, 3, (8, 25))
    assert program.loc(fill) == "p.cimasm:10:3"
    assert program.instrs(5) == () and program.decl("nope") is None


def test_views_strides_and_symbols() -> None:
    program = parse_program(
        ".arch tiny\n.input x dram[0x1000] i32[4x8]\n.core 0\n"
        "  dma sp[0x20]:i32[2x3/8], dram[x+0x24]:i32[2x3/8]\n  halt\n"
    )
    dst, src = program.instrs(0)[0].operands
    assert isinstance(dst, View) and isinstance(src, View)
    assert (src.addr, src.symbol, src.offset, src.stride) == (0x1024, "x", 0x24, 8)
    assert src.end == 0x1024 + (1 * 8 + 3) * 4
    assert dst.row_ranges() == ((0x20, 0x2C), (0x40, 0x4C))
    assert dst.nbytes == 24 and dst.elements == 6


def test_bare_macros_take_their_extent_from_the_operands() -> None:
    program = parse_program(
        ".arch tiny\n.core 0\n  mload.t m2, sp[0x0]:i8[3x5]\n"
        "  mvm sp[0x100]:i32[7x3], sp[0x40]:i8[7x5], m2\n  halt\n"
    )
    mload, mvm = program.instrs(0)[:2]
    assert mload.operands[0] == MacroRef(2, 0, 5, 0, 3, whole=True)
    assert mvm.operands[2] == MacroRef(2, 0, 5, 0, 3, whole=True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "p.cimasm:1:1: missing '.arch NAME' line"),
        (".arch a\n.arch b\n", "p.cimasm:2:1: '.arch' must come first"),
        (".arch ../x.toml\n", "p.cimasm:1:7: arch '../x.toml' is not a preset name"),
        (".arch a\n.region r gb[0] 8\n.consts c\n", "p.cimasm:3:1: '.consts' must follow"),
        (".arch a\n.consts c\n.consts d\n", "p.cimasm:3:1: duplicate '.consts'"),
        (".region r gb[0] 8\n", "p.cimasm:1:1: declaration before '.arch'"),
        (".arch a\n.const c sp[0] i8[1x1]\n", "p.cimasm:2:10: a .const lives in flash, dram, gb"),
        (".arch a\n.input c dram[0] 16\n", "p.cimasm:2:18: a .input needs a type"),
        (".arch a\n.region r gb[0] i8[1x1]\n", "p.cimasm:2:17: a .region takes a byte count"),
        (".arch a\n.region r gb[0] 0\n", "p.cimasm:2:17: a region needs a positive byte count"),
        (".arch a\n.input c dram[0] i8[2x2/4]\n", "p.cimasm:2:21: a declaration cannot have"),
        (".arch a\n.core 0\n  fill sp[0]:i8[0x4], 0\n", "p.cimasm:3:17: shape 0x4 must have"),
        (".arch a\n.core 0\n  mload q1, sp[0]:i8[1x1]\n", "p.cimasm:3:9: 'q1' is not an operand"),
        (".arch a\n.core 0\n  mload q1[0:1,0:1], sp[0]:i8[1x1]\n", "'q1' is not a macro"),
        (".arch a\n.core 0\n  fill 3, 3\n", "'fill' operand 1 (dst): must be a view"),
        (
            ".arch a\n.core 0\n  send sp[0]:i8[1x1], sp[0]:i8[1x1], 0\n",
            "'send' operand 1 (core): must be an integer (core id), not a view",
        ),
        (".arch a\n.core 0\n  send 1, sp[0]:i8[1x1], 70000\n", "tag 70000 is out of range"),
        (
            ".arch a\n.core 0\n  gather sp[0]:i8[2x4], sp[8]:i16[9x4], sp[64]:i32[2x1]\n",
            "'gather' operand 2 (table): dtype i16 does not match operand 1's i8",
        ),
        (
            ".arch a\n.core 0\n  gather sp[0]:i8[2x4], sp[8]:i8[9x5], sp[64]:i32[2x1]\n",
            "'gather' operand 1 (dst): destination has 4 columns, the table 5",
        ),
        (
            ".arch a\n.core 0\n  gather sp[0]:i8[2x4], sp[8]:i8[9x4], sp[64]:i32[3x1]\n",
            "'gather' operand 3 (index): index must be 2x1, not 3x1",
        ),
        (
            ".arch a\n.core 0\n  scatter sp[0]:i8[9x4], sp[64]:i8[2x5], sp[96]:i32[2x1]\n",
            "'scatter' operand 2 (src): source has 5 columns, the table 4",
        ),
        (
            ".arch a\n.core 0\n  scatter sp[0]:i8[9x4], sp[64]:i8[2x4], sp[96]:i32[2x2]\n",
            "'scatter' operand 3 (index): index must be 2x1, not 2x2",
        ),
        (
            ".arch a\n.core 0\n  transpose sp[0]:i8[2x4], sp[8]:i8[2x4]\n",
            "destination 2x4 must be the transpose of the source 2x4",
        ),
        (".arch a\n.core 0\n  rsum sp[0]:i32[2x2], sp[8]:i8[2x4]\n", "destination must be 2x1"),
        (
            ".arch a\n.core 0\n  mvm sp[0]:i32[2x4], sp[8]:i8[2x3], m0[0:4,0:4]\n",
            "macro window 4x4 does not match the 3x4 data; use m0[0:3,0:4]",
        ),
        (
            ".arch a\n.core 0\n  lut sp[0]:i16[2x4], sp[8]:i16[2x4], sp[64]:i16[1x256]\n",
            "'lut' operand 2 (a): must be i8, not i16",
        ),
        (
            ".arch a\n.core 0\n  req sp[0]:i8[1x1], sp[8]:i32[1x1], 1, 2, 3, -129, 0\n",
            "clamp low -129 is out of range [-128, 127]",
        ),
        (
            ".arch a\n.core 0\n  add sp[0]:i8[1x1], sp[8]:i8[1x1], 1 2\n",
            "p.cimasm:3:39: syntax error: unexpected '2'",
        ),
        (".arch a\n.core 0\n  add sp[0]:i8[1x1] ; x\n", "'add' takes 3 operands"),
    ],
)
def test_errors_name_the_place_and_the_fix(text: str, message: str) -> None:
    assert message in _err(text)


def test_syntax_errors_are_one_line_with_expectations() -> None:
    message = _err(".arch a\n.core 0\n  dma sp[0x0]:i8[2x2], dram[x+]:i8[2x2]\n")
    assert message == "p.cimasm:3:31: syntax error: unexpected ']'; expected an integer"
    assert "\n" not in _err(".arch a\n.core 0\n  @@@\n")


def test_lark_and_fast_path_report_the_same_syntax_error() -> None:
    text = ".arch a\n.core 0\n  mov sp[0x0]i8[4x8], sp[0x40]:i8[4x8]\n"
    with pytest.raises(CimcError) as info:
        lark_tree(text, "p.cimasm")
    assert str(info.value) == _err(text)


def test_crlf_and_missing_final_newline_are_accepted() -> None:
    unix = parse_program(".arch a\n.core 0\n  halt ; end\n")
    assert parse_program(".arch a\r\n.core 0\r\n  halt ; end") == unix


def test_load_program_reads_files_and_reports_missing_ones(tmp_path: Path) -> None:
    path = tmp_path / "p.cimasm"
    path.write_text(".arch a\n.core 0\n  halt\n")
    assert load_program(path).source_name == str(path)
    with pytest.raises(CimcError, match="cannot read the program") as info:
        load_program(tmp_path / "missing.cimasm")
    assert str(info.value).startswith(str(tmp_path / "missing.cimasm"))
    path.write_bytes(b".arch a\n\xff\xfe\n")
    with pytest.raises(CimcError, match="cannot read the program"):
        load_program(path)


def test_view_stride_defaults_to_contiguous_rows() -> None:
    assert View("sp", 0, "i8", 2, 3) == View("sp", 0, "i8", 2, 3, 3)
    assert View("sp", 0, "i8", 2, 3).row_ranges() == ((0, 6),)
