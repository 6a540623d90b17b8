"""The ISA pieces autoregressive decoding needs: `.state` declarations that persist across
runs, and `scatter` (a row store at run-time indices) that appends to a KV cache."""

from __future__ import annotations

import numpy as np
import pytest

from cimc.errors import CimcError
from cimc.machine.arch import load_arch
from cimc.machine.cost import instr_cost, transfer
from cimc.machine.interpreter import run_program
from cimc.machine.parser import parse_program
from cimc.machine.printer import print_program
from cimc.machine.validator import validate

TINY = load_arch("tiny")

APPEND = """.arch tiny
.input   row             dram[0x0]       i8[2x4]
.input   pos             dram[0x40]      i32[2x1]
.output  seen            dram[0x80]      i8[8x4]
.state   cache           dram[0x100]     i8[8x4]

.core 0
  dma      sp[0x0]:i8[2x4], dram[row]:i8[2x4]
  dma      sp[0x40]:i32[2x1], dram[pos]:i32[2x1]
  scatter  dram[cache]:i8[8x4], sp[0x0]:i8[2x4], sp[0x40]:i32[2x1]  ; /append
  dma      sp[0x80]:i8[8x4], dram[cache]:i8[8x4]
  dma      dram[seen]:i8[8x4], sp[0x80]:i8[8x4]
  halt
"""


def _run(state: dict | None, rows: np.ndarray, pos: list[int]):  # type: ignore[no-untyped-def]
    program = parse_program(APPEND, "append.cimasm")
    feeds = {"row": rows.astype(np.int8), "pos": np.array(pos, np.int32).reshape(-1, 1)}
    return run_program(program, TINY, feeds, {}, state=state)


def test_state_round_trips_and_validates() -> None:
    program = parse_program(APPEND, "append.cimasm")
    assert print_program(program) == APPEND
    validate(program, TINY)  # a .state is writable, unlike a .const
    decl = program.decl("cache")
    assert decl is not None and (decl.kind, decl.dtype, decl.rows, decl.cols) == (
        "state",
        "i8",
        8,
        4,
    )


def test_state_persists_between_runs_and_scatter_appends() -> None:
    a = np.arange(8).reshape(2, 4)
    first = _run(None, a, [0, 5])  # no state given: starts at zero
    want = np.zeros((8, 4), np.int8)
    want[[0, 5]] = a
    np.testing.assert_array_equal(first.state["cache"], want)
    np.testing.assert_array_equal(first.outputs["seen"], want)
    b = -np.arange(8).reshape(2, 4) - 1
    second = _run(first.state, b, [1, 1])  # a repeated index keeps the last row
    want[1] = b[1]
    np.testing.assert_array_equal(second.state["cache"], want)
    assert first.state["cache"][1].sum() == 0  # the first run's result was not aliased


def test_scatter_index_out_of_range_names_the_instruction() -> None:
    with pytest.raises(CimcError, match=r"append.cimasm:10:3: core 0: scatter: index 8 in row 1"):
        _run(None, np.ones((2, 4)), [0, 8])


def test_state_errors() -> None:
    with pytest.raises(CimcError, match=r"unknown state 'kv'; the program's states are: cache"):
        _run({"kv": np.zeros((8, 4), np.int8)}, np.ones((2, 4)), [0, 1])
    with pytest.raises(CimcError, match=r"state 'cache' has shape \(4, 4\)"):
        _run({"cache": np.zeros((4, 4), np.int8)}, np.ones((2, 4)), [0, 1])
    with pytest.raises(CimcError, match=r"a .state lives in dram, gb, not 'flash'"):
        parse_program(".arch tiny\n.state s flash[0x0] i8[1x4]\n")
    with pytest.raises(CimcError, match=r"'scatter' operand 2 \(src\): dtype i16"):
        parse_program(
            ".arch tiny\n.core 0\n  scatter sp[0]:i8[4x4], sp[64]:i16[1x4], sp[128]:i32[1x1]\n"
        )


def test_scatter_cost_is_a_store_plus_a_burst_per_row() -> None:
    program = parse_program(APPEND, "append.cimasm")
    scatter = program.instrs(0)[2]
    arch = load_arch("default")
    cost = instr_cost(scatter, 0, arch)
    base = transfer("sp", "dram", 8, 0, arch)
    assert cost.unit == "dma" and cost.channels == ("dram",)
    assert cost.cycles == base.cycles + arch.memory.dram_latency_cycles  # 2 rows: one extra
    assert cost.energy.dram == pytest.approx(base.energy.dram)


WARM = """.arch tiny
.input   x               dram[0x0]       i8[2x4]
.output  y               dram[0x40]      i32[2x3]
.persist 0 m1
{load}
.core 0
  dma      sp[0x0]:i8[2x4], dram[x]:i8[2x4]
{mload}  mvm      sp[0x40]:i32[2x3], sp[0x0]:i8[2x4], m1
  dma      dram[y]:i32[2x3], sp[0x40]:i32[2x3]
  halt
"""
COLD_LOAD = ".input   w               dram[0x80]      i8[4x3]\n"
COLD_MLOAD = "  dma      sp[0x80]:i8[4x3], dram[w]:i8[4x3]\n  mload    m1, sp[0x80]:i8[4x3]\n"


def test_persisted_macro_carries_weights_to_the_next_run() -> None:
    cold = parse_program(WARM.format(load=COLD_LOAD, mload=COLD_MLOAD), "cold.cimasm")
    warm = parse_program(WARM.format(load="", mload=""), "warm.cimasm")
    assert print_program(warm) == WARM.format(load="", mload="")
    assert warm.persists[0].core == 0 and warm.persists[0].macro == 1
    validate(cold, TINY)
    validate(warm, TINY)  # the mvm reads m1 without an mload: it persists
    w = np.arange(12, dtype=np.int8).reshape(4, 3) - 6
    x = np.arange(8, dtype=np.int8).reshape(2, 4)
    first = run_program(cold, TINY, {"x": x, "w": w}, {})
    assert set(first.macros) == {(0, 1)}
    second = run_program(warm, TINY, {"x": -x}, {}, macros=first.macros)
    np.testing.assert_array_equal(second.outputs["y"], -x.astype(np.int32) @ w)
    np.testing.assert_array_equal(second.macros[(0, 1)].weights[:4, :3], w)
    with pytest.raises(CimcError, match=r"warm.cimasm:8:3: core 0: mvm: macro m1 cell \(0, 0\)"):
        run_program(warm, TINY, {"x": x}, {})  # nothing persisted yet: a run-time error


def test_persist_errors() -> None:
    no_persist = WARM.format(load="", mload="").replace(".persist 0 m1\n", "")
    with pytest.raises(CimcError, match=r"that no earlier mload on this core wrote"):
        validate(parse_program(no_persist, "p.cimasm"), TINY)
    bad = WARM.format(load="", mload="").replace(".persist 0 m1", ".persist 0 m9")
    with pytest.raises(CimcError, match=r"p.cimasm:4:1: .persist 0 m9: arch 'tiny' has cores"):
        validate(parse_program(bad, "p.cimasm"), TINY)
    with pytest.raises(CimcError, match=r"'.persist' takes a core id and a macro mN, not 'x1'"):
        parse_program(".arch tiny\n.persist 0 x1\n")
    with pytest.raises(CimcError, match=r"duplicate '.persist 0 m1'"):
        parse_program(".arch tiny\n.persist 0 m1\n.persist 0 m1\n")
    warm = parse_program(WARM.format(load="", mload=""), "warm.cimasm")
    first = run_program(
        parse_program(WARM.format(load=COLD_LOAD, mload=COLD_MLOAD), "cold.cimasm"),
        TINY,
        {"x": np.zeros((2, 4), np.int8), "w": np.zeros((4, 3), np.int8)},
        {},
    )
    with pytest.raises(CimcError, match=r"does not declare '.persist 1 m1'"):
        run_program(
            warm, TINY, {"x": np.zeros((2, 4), np.int8)}, {}, macros={(1, 1): first.macros[(0, 1)]}
        )


def test_fast_parser_and_grammar_agree_on_the_new_lines() -> None:
    from tests.machine.test_parser_fastpath import _agree

    assert _agree(APPEND)
    assert _agree(WARM.format(load="", mload="").replace(".persist 0 m1", ".persist  0  m1 ; kept"))
