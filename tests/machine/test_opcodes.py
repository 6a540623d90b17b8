"""The opcode table is the single source: every opcode has parser checks, a printer form,
an interpreter kernel and a cost function."""

from __future__ import annotations

import importlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cimc.machine import opcodes
from cimc.machine.opcodes import OPCODES, Access, Kind, Unit, missing_implementations
from cimc.machine.parser import parse_program
from cimc.machine.printer import print_instr, print_program
from cimc.machine.program import CoreStream, Instr, Program
from tests.machine.strategies import BUILDERS, DECLS, instrs


def test_every_opcode_has_kernel_and_cost() -> None:
    # interpreter.py and cost.py register their implementations into the table on import.
    importlib.import_module("cimc.machine.interpreter")
    importlib.import_module("cimc.machine.cost")
    assert missing_implementations() == {"kernel": (), "cost": ()}


@pytest.mark.parametrize("mnemonic", sorted(BUILDERS))
def test_every_opcode_prints_and_parses_back(mnemonic: str) -> None:
    @settings(max_examples=15, deadline=None)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        built = data.draw(instrs(0, mnemonic))
        program = Program("tiny", None, DECLS, (CoreStream(0, (*built, Instr("halt", ()))),))
        text = print_program(program)
        assert all(print_instr(i) in text.splitlines() for i in built)
        assert parse_program(text) == program

    check()


@pytest.mark.parametrize("mnemonic", sorted(OPCODES))
def test_every_opcode_checks_its_arity(mnemonic: str) -> None:
    spec = OPCODES[mnemonic]
    operands = ", ".join(["1"] * (len(spec.operands) + 1))
    with pytest.raises(Exception, match=f"'{mnemonic}' takes {len(spec.operands)} operands"):
        parse_program(f".arch tiny\n.core 0\n  {mnemonic} {operands}\n")


def test_signatures_are_consistent() -> None:
    for spec in OPCODES.values():
        assert spec.unit in Unit
        for operand in spec.operands:
            if operand.kind in (Kind.IMM, Kind.CORE, Kind.TAG):
                assert operand.access == Access.NONE, spec.mnemonic
            if operand.access in (Access.WRITE, Access.READWRITE) and operand.kind == Kind.VIEW:
                assert "flash" not in operand.spaces, spec.mnemonic
    # Exactly the destination of each vector op is written, and it comes first.
    for spec in OPCODES.values():
        if spec.unit == Unit.VECTOR:
            assert spec.operands[0].access == Access.WRITE, spec.mnemonic
            assert all(o.access != Access.WRITE for o in spec.operands[1:]), spec.mnemonic


def test_views_report_reads_and_writes() -> None:
    program = parse_program(
        ".arch tiny\n.core 0\n  mvm.acc sp[0x0]:i32[2x4], sp[0x40]:i8[2x3], m1\n  halt\n"
    )
    instr = program.instrs(0)[0]
    spec = opcodes.spec_of(instr)
    assert [v.addr for v in spec.reads(instr)] == [0x0, 0x40]
    assert [v.addr for v in spec.writes(instr)] == [0x0]
    macro = spec.macro(instr)
    assert macro is not None and macro[0].shape == (3, 4) and macro[1] == Access.READ


def test_registration_rejects_unknown_and_duplicate() -> None:
    registry: dict = {}

    def k1() -> None: ...

    def k2() -> None: ...

    opcodes._register(registry, "kernel", ("add",))(k1)
    with pytest.raises(KeyError, match="already has a kernel"):
        opcodes._register(registry, "kernel", ("add",))(k2)
    with pytest.raises(KeyError, match="unknown opcode 'addd'"):
        opcodes._register(registry, "kernel", ("addd",))(k1)
    assert registry == {"add": k1}
