"""Small constants copied to gb at the start (cimc/backend/program_passes/stage_consts.py):
which are staged, that readers read the copy after their token, and that the program computes the
same bytes."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from cimc.backend.program_passes.stage_consts import REGION, stage_consts
from cimc.backend.stream.prefetch import IMAGE
from cimc.machine.arch import load_arch
from cimc.machine.consts_file import load_consts
from cimc.machine.interpreter import run_program
from cimc.machine.parser import load_program, parse_program
from cimc.machine.printer import print_program
from cimc.machine.program import Decl, Program, View
from cimc.machine.validator import validate
from cimc.resources import isa_dir
from tests.e2e.e2e_helpers import compile_and_verify, zoo_graph

TINY = load_arch("tiny")
ALWAYS = math.inf  # stage whatever the share of the weight image


def _ops(program: Program, core: int) -> list[str]:
    """Each instruction as `opcode first-source` (the source's symbol or space)."""
    out = []
    for i in program.instrs(core):
        views = [v for v in i.operands[1:] if isinstance(v, View)]
        out.append(f"{i.opcode} {(views[0].symbol or views[0].space) if views else '-'}")
    return out


def _with_image(program: Program) -> Program:
    """The program with a (never read) weight image: staging only pays behind weights."""
    image = Decl("const", IMAGE, "dram", 0x4000, "i8", 1, 4096, 4096)
    return replace(program, header=(*program.header, image))


def test_example_reads_its_constants_from_the_gb_copy_and_computes_the_same() -> None:
    path = isa_dir() / "examples" / "matmul_2core.cimasm"
    example = load_program(path)
    consts = {**load_consts(example), IMAGE: np.zeros((1, 4096), np.int8)}
    program = _with_image(example)
    staged = stage_consts(program, TINY, ALWAYS)
    validate(staged, TINY)
    # the last core copies b and mult (dram; w is in flash, x an input) and sends core 0,
    # which reads them, a token; core 0 receives it right before its first read
    assert _ops(staged, 1)[:3] == ["dma b", "dma mult", "send sp"]
    ops0 = _ops(staged, 0)
    first = ops0.index(f"dma {REGION}")
    assert ops0[first - 1] == "recv sp" and ops0.count("recv sp") == 2  # + core 1's sums
    assert ops0.count(f"dma {REGION}") == 2 and "dma b" not in ops0
    inputs = dict(np.load(path.with_suffix(".inputs.npz"), allow_pickle=False))
    before = run_program(program, TINY, inputs, consts).outputs["y"]
    after = run_program(staged, TINY, inputs, consts).outputs["y"]
    np.testing.assert_array_equal(after, before)


HEADER = f""".arch tiny
.const   c               dram[0x0]       i32[1x32]
.const   t               dram[0x100]     i8[16x32]
.const   big             dram[0x400]     i32[1x600]
.const   late            dram[0x1000]    i32[1x32]
.output  y               dram[0x2000]    i32[1x32]
.const   {IMAGE}     dram[0x3000]    i8[1x4096]
"""
BODY = """
.core 0
  dma      sp[0x0]:i32[1x32], dram[late]:i32[1x32]
  dma      sp[0x100]:i32[1x32], dram[c]:i32[1x32]
  fill     sp[0x80]:i32[4x1], 3
  gather   sp[0x200]:i8[4x32], dram[t]:i8[16x32], sp[0x80]:i32[4x1]
  dma      sp[0x400]:i32[1x600], dram[big]:i32[1x600]
  dma      dram[y]:i32[1x32], sp[0x0]:i32[1x32]
  halt
.core 1
  halt
"""


def test_tokens_come_in_batch_order_before_any_read_of_a_later_batch() -> None:
    program = parse_program(HEADER + BODY)
    staged = stage_consts(program, TINY, ALWAYS)
    validate(staged, TINY)  # no gb race: every read is ordered after its copy
    # batches (c) and (big, late) (the first is at most 2 KiB); core 0 reads late first,
    # so both tokens come before that read
    assert _ops(staged, 1) == ["dma c", "send sp", "dma big", "dma late", "send sp", "halt -"]
    assert _ops(staged, 0)[:4] == ["recv sp", "recv sp", f"dma {REGION}", f"dma {REGION}"]
    # a table a gather indexes stays in dram
    assert "gather t" in _ops(staged, 0) and "dram[t]" in print_program(staged)


def test_nothing_is_staged_without_room_in_gb_or_weights_to_wait_behind() -> None:
    program = parse_program(HEADER + BODY)
    assert stage_consts(program, TINY) is program  # 2.7 KiB of constants > 1/16 of 4 KiB
    without = parse_program((HEADER + BODY).replace(f".const   {IMAGE}", "; no image"))
    assert stage_consts(without, TINY, ALWAYS) is without  # no weight stream to wait behind
    full = HEADER + f".region  act             gb[0x0]         {TINY.memory.gb_bytes - 64}\n"
    program = parse_program(full + BODY)
    assert stage_consts(program, TINY, ALWAYS) is program
    roomy = HEADER + f".region  act             gb[0x0]         {TINY.memory.gb_bytes - 256}\n"
    staged = stage_consts(parse_program(roomy + BODY), TINY, ALWAYS)
    assert _ops(staged, 1)[:2] == ["dma c", "send sp"]  # only c fits


def test_a_staged_model_verifies_bit_exactly(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import cimc.backend.program_passes.stage_consts as stage

    monkeypatch.setattr(stage, "MAX_SHARE", ALWAYS)  # compile_graph uses the default
    result, report = compile_and_verify(zoo_graph("bert", 1, 8), "default")
    assert result.compiled.program.decl(REGION) is not None
    assert report.bit_exact
