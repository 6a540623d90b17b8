"""mvm.i4: cells holding two's-complement int4 pairs, low half first (SPEC section 4)."""

from __future__ import annotations

import numpy as np
import pytest

from cimc.errors import CimcError
from cimc.machine.arch import load_arch
from cimc.machine.cost import instr_cost
from cimc.machine.interpreter import run_program
from cimc.machine.kernels import pack_int4, unpack_int4
from cimc.machine.parser import parse_program
from cimc.machine.validator import validate

PROGRAM = """\
.arch tiny
.input   w               dram[0x0]       i8[6x4]
.input   x               dram[0x100]     i8[3x6]
.output  y               dram[0x200]     i32[3x7]

.core 0
  dma      sp[0x0]:i8[6x4], dram[w]:i8[6x4]
  dma      sp[0x40]:i8[3x6], dram[x]:i8[3x6]
  mload    m1[2:8,5:9], sp[0x0]:i8[6x4]
  mvm.i4   sp[0x80]:i32[3x7], sp[0x40]:i8[3x6], m1[2:8,5:9]
  mvm.i4.acc sp[0x80]:i32[3x7], sp[0x40]:i8[3x6], m1[2:8,5:9]
  dma      dram[y]:i32[3x7], sp[0x80]:i32[3x7]
  halt
"""


def test_pack_and_unpack_are_inverse_and_sign_extend() -> None:
    w = np.array([[-8, 7, -1, 0, 3]])
    packed = pack_int4(w)
    assert packed.shape == (1, 3) and packed.dtype == np.int8
    assert list(packed.view(np.uint8)[0]) == [0x78, 0x0F, 0x03]
    np.testing.assert_array_equal(unpack_int4(packed)[:, :5], w)
    with pytest.raises(ValueError, match="-8..7"):
        pack_int4(np.array([[8]]))


def test_mvm_i4_is_the_product_with_the_unpacked_weights() -> None:
    arch = load_arch("tiny")
    program = parse_program(PROGRAM, "i4.cimasm")
    validate(program, arch)
    rng = np.random.default_rng(0)
    weights = rng.integers(-8, 8, (6, 7))
    x = rng.integers(-128, 128, (3, 6)).astype(np.int8)
    run = run_program(program, arch, {"w": pack_int4(weights), "x": x})
    np.testing.assert_array_equal(run.outputs["y"], 2 * (x.astype(np.int64) @ weights))


def test_mvm_i4_costs_the_cycles_of_mvm_and_counts_every_output() -> None:
    arch = load_arch("tiny")
    program = parse_program(PROGRAM, "i4.cimasm")
    mvm = program.cores[0].instrs[3]
    cost = instr_cost(mvm, 0, arch)
    assert cost.macs == 3 * 6 * 7
    assert cost.cycles == 3 * arch.mvm_cycles_per_vector + arch.macro.pipeline_cycles


def test_mvm_i4_window_is_half_the_outputs() -> None:
    bad = PROGRAM.replace("mvm.i4   sp[0x80]:i32[3x7]", "mvm.i4   sp[0x80]:i32[3x9]")
    with pytest.raises(CimcError, match=r"macro window 6x4 does not match the 6x5 data"):
        parse_program(bad, "i4.cimasm")
