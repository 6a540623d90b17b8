"""merge_sends: runs of sends of one buffer from one core become one mcast, the recvs
re-tagged; programs execute to the same outputs and validate before and after."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from cimc.backend.program_passes.merge_sends import merge_sends
from cimc.machine.arch import load_arch
from cimc.machine.interpreter import run_program
from cimc.machine.parser import parse_program
from cimc.machine.printer import print_program
from cimc.machine.program import SENDS, CoreSet, Imm, Program, destinations
from cimc.machine.schedule import simulate
from cimc.machine.validator import validate

LARGE = load_arch("large")
MSG = "sp[0x0]:i32[2x4]"
OTHER = "sp[0x40]:i32[2x4]"
HEAD = ".arch large\n.input x dram[0x0] i32[2x4]\n" + "".join(
    f".output y{c} dram[{0x100 * c:#x}] i32[2x4]\n" for c in range(1, 6)
)


def _program(*streams: str) -> Program:
    body = "".join(f".core {c}\n{s}  halt\n" for c, s in enumerate(streams))
    program = parse_program(HEAD + body, "m.cimasm")
    validate(program, LARGE)
    return program


def _receiver(core: int, tag: int, src: int = 0) -> str:
    dst = f"sp[{0x80 * core:#x}]:i32[2x4]"
    return f"  recv {src}, {dst}, {tag}\n  dma dram[y{core}]:i32[2x4], {dst}\n"


def _same_run(before: Program, after: Program) -> dict[str, np.ndarray]:
    """Validates `after` and checks it computes what `before` does."""
    validate(after, LARGE)
    x = np.arange(8, dtype=np.int32).reshape(2, 4) * -1000
    want = run_program(before, LARGE, {"x": x}, consts={}).outputs
    got = run_program(after, LARGE, {"x": x}, consts={}).outputs
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    return got


def _opcodes(program: Program, core: int) -> list[str]:
    return [i.opcode for i in program.instrs(core)]


def _tags_per_pair(program: Program) -> Counter[tuple[int, int, int]]:
    return Counter(
        (s.core, d, i.operands[2].value)  # type: ignore[union-attr]
        for s in program.cores
        for i in s.instrs
        if i.opcode in SENDS
        for d in destinations(i)
    )


def test_a_run_of_sends_becomes_one_mcast_and_its_recvs_follow() -> None:
    sender = f"  dma {MSG}, dram[x]:i32[2x4]\n" + "".join(
        f"  send {c}, {MSG}, {t}\n" for c, t in ((3, 0), (1, 4), (2, 2))
    )
    before = _program(sender, _receiver(1, 4), _receiver(2, 2), _receiver(3, 0))
    after = merge_sends(before)
    out = _same_run(before, after)
    for c in (1, 2, 3):
        np.testing.assert_array_equal(out[f"y{c}"], np.arange(8).reshape(2, 4) * -1000)
    assert _opcodes(after, 0) == ["dma", "mcast", "halt"]
    mcast = after.instrs(0)[1]
    assert mcast.operands[0] == CoreSet((1, 2, 3))
    assert mcast.operands[2] == Imm(0)  # the first send's own tag is free for every pair
    for c in (1, 2, 3):
        assert after.instrs(c)[0].operands[2] == Imm(0)
    assert simulate(after, LARGE).makespan <= simulate(before, LARGE).makespan
    assert parse_program(print_program(after)) == after  # it prints as valid assembly


def test_the_merged_tag_is_fresh_for_every_pair() -> None:
    # pair (0, 2) already carries tag 0 and pair (0, 1) tag 1: neither run tag is free.
    sender = (
        f"  dma {MSG}, dram[x]:i32[2x4]\n  dma {OTHER}, dram[x]:i32[2x4]\n"
        f"  send 2, {OTHER}, 0\n  send 1, {OTHER}, 1\n"
        f"  dma {MSG}, {MSG}\n"  # ends the run of OTHER sends
        f"  send 1, {MSG}, 0\n  send 2, {MSG}, 1\n"
    )
    early = "sp[0x400]:i32[2x4]"
    one = f"  recv 0, {early}, 1\n" + _receiver(1, 0)
    two = f"  recv 0, {early}, 0\n" + _receiver(2, 1)
    before = _program(sender, one, two)
    after = merge_sends(before)
    _same_run(before, after)
    assert _opcodes(after, 0) == ["dma", "dma", "mcast", "dma", "mcast", "halt"]
    tags = _tags_per_pair(after)
    assert max(tags.values()) == 1  # one message per (source, destination, tag)
    # the first run: tag 0 is taken on (0, 1), tag 1 on (0, 2): one past the largest in use;
    # the second run may then take its first send's tag 0 (freed on (0, 2) by the first)
    assert [after.instrs(0)[i].operands[2] for i in (2, 4)] == [Imm(2), Imm(0)]


@pytest.mark.parametrize(
    "between",
    [
        "  dma sp[0x300]:i32[2x4], dram[x]:i32[2x4]\n",  # an instruction
        "  ; a comment\n",  # a comment line: kept where it is
    ],
)
def test_anything_between_two_sends_keeps_them_apart(between: str) -> None:
    sender = f"  dma {MSG}, dram[x]:i32[2x4]\n  send 1, {MSG}, 0\n{between}  send 2, {MSG}, 0\n"
    before = _program(sender, _receiver(1, 0), _receiver(2, 0))
    assert merge_sends(before) == before


def test_other_buffers_and_repeated_destinations_are_not_merged() -> None:
    sender = (
        f"  dma {MSG}, dram[x]:i32[2x4]\n  dma {OTHER}, dram[x]:i32[2x4]\n"
        f"  send 1, {MSG}, 0\n  send 2, {OTHER}, 0\n"  # different buffers
        f"  send 3, {MSG}, 0\n  send 3, {MSG}, 1\n"  # the same core twice
    )
    three = _receiver(3, 0) + "  recv 0, sp[0x300]:i32[2x4], 1\n"
    before = _program(sender, _receiver(1, 0), _receiver(2, 0), three)
    assert merge_sends(before) == before


def test_runs_on_several_cores_and_recvs_after_merged_sends() -> None:
    # Core 1 both merges a run of its own and receives from core 0's merged run: its recv
    # sites move up with its merged sends, and must still be re-tagged.
    zero = f"  dma {MSG}, dram[x]:i32[2x4]\n  send 1, {MSG}, 7\n  send 2, {MSG}, 7\n"
    one = (
        "  dma sp[0x10]:i32[2x4], dram[x]:i32[2x4]\n"
        "  send 3, sp[0x10]:i32[2x4], 7\n  send 4, sp[0x10]:i32[2x4], 7\n"
        "  send 5, sp[0x10]:i32[2x4], 7\n" + _receiver(1, 7)
    )
    later = [_receiver(c, 7, src=1) for c in (3, 4, 5)]
    before = _program(zero, one, _receiver(2, 7), *later)
    after = merge_sends(before)
    _same_run(before, after)
    assert _opcodes(after, 1) == ["dma", "mcast", "recv", "dma", "halt"]
    assert after.instrs(1)[1].operands[0] == CoreSet((3, 4, 5))


def test_compiled_models_leave_no_run_of_sends() -> None:
    from tests.e2e.e2e_helpers import compile_and_verify, zoo_graph

    result, report = compile_and_verify(zoo_graph("bert"), "large")
    assert report.bit_exact
    program = result.compiled.program
    assert merge_sends(program) == program  # applied by the compiler: nothing left to merge
    token_mcasts = [
        i
        for s in program.cores
        for i in s.instrs
        if i.opcode == "mcast" and i.operands[1].shape == (1, 1)  # type: ignore[union-attr]
    ]
    assert token_mcasts  # a layer's cores reading one core's rows: one token mcast
