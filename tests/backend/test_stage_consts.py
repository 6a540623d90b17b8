"""Small constants copied to gb at the start (cimc/backend/stage_consts.py): which are
staged, that readers read the copy, and that the program computes the same bytes."""

from __future__ import annotations

import numpy as np

from cimc.backend.stage_consts import REGION, stage_consts
from cimc.machine.arch import load_arch
from cimc.machine.interpreter import run_program
from cimc.machine.parser import load_program, parse_program
from cimc.machine.printer import print_program
from cimc.machine.validator import validate
from cimc.resources import isa_dir

TINY = load_arch("tiny")


def _lines(program_text: str, core: int) -> list[str]:
    body = program_text.split(f".core {core}\n", 1)[1].split("\n.core", 1)[0]
    return [line.split(";")[0].split() for line in body.splitlines() if line.strip()]


def test_example_reads_its_constants_from_the_gb_copy_and_computes_the_same() -> None:
    path = isa_dir() / "examples" / "matmul_2core.cimasm"
    program = load_program(path)
    staged = stage_consts(program, TINY)
    validate(staged, TINY)
    text = print_program(staged)
    # core 0 copies b and mult (dram; w is in flash, x is an input), then every core
    # passes the barrier that orders the copies before the reads
    core0, core1 = _lines(text, 0), _lines(text, 1)
    assert [op[0] for op in core0[:3]] == ["dma", "dma", "barrier"]
    assert "dram[b]" in core0[0][2] and "dram[mult]" in core0[1][2]
    assert core1[0] == ["barrier"]
    reads = [op for op in core0[3:] if op[0] == "dma" and op[2].startswith("gb[")]
    assert [op[2].split(":")[0] for op in reads] == [f"gb[{REGION}]", f"gb[{REGION}+0x100]"]
    assert "dram[b]" not in " ".join(" ".join(op) for op in core0[3:])
    inputs = dict(np.load(path.with_suffix(".inputs.npz"), allow_pickle=False))
    before = run_program(program, TINY, inputs).outputs["y"]
    after = run_program(staged, TINY, inputs).outputs["y"]
    np.testing.assert_array_equal(after, before)


HEADER = """.arch tiny
.const   c               dram[0x0]       i32[1x32]
.const   t               dram[0x100]     i8[16x32]
.output  y               dram[0x2000]    i32[1x32]
"""
BODY = """
.core 0
  dma      sp[0x0]:i32[1x32], dram[c]:i32[1x32]
  fill     sp[0x80]:i32[4x1], 3
  gather   sp[0x200]:i8[4x32], dram[t]:i8[16x32], sp[0x80]:i32[4x1]
  dma      dram[y]:i32[1x32], sp[0x0]:i32[1x32]
  halt
"""


def test_a_gathered_table_stays_in_dram() -> None:
    program = parse_program(HEADER + BODY)
    staged = stage_consts(program, TINY)
    validate(staged, TINY)
    text = print_program(staged)
    assert f".region  {REGION}" in text
    assert "gather   sp[0x200]:i8[4x32], dram[t]:i8[16x32]" in text
    assert "dma      sp[0x0]:i32[1x32], gb[const.gb]:i32[1x32]" in text


def test_nothing_is_staged_without_room_in_gb() -> None:
    full = HEADER + f".region  act             gb[0x0]         {TINY.memory.gb_bytes - 64}\n"
    program = parse_program(full + BODY)
    assert stage_consts(program, TINY) is program
    roomy = HEADER + f".region  act             gb[0x0]         {TINY.memory.gb_bytes - 256}\n"
    staged = stage_consts(parse_program(roomy + BODY), TINY)
    assert f"gb[{REGION}]" in print_program(staged)
