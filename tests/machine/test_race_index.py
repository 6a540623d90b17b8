"""The indexed race check (cimc/machine/sync.py) against the plain quadratic definition.

Random multi-core skeletons (dma between sp and strided gb/dram views, barriers, send/recv
chains; racy on purpose) must give the same first race, pair for pair, as a scan of every
pair of accesses; the O(1) strided overlap test must agree with a byte-set comparison.
"""

from __future__ import annotations

import random

import pytest

from cimc.errors import CimcError
from cimc.machine import sync
from cimc.machine.parser import parse_program
from cimc.machine.program import CoreStream, Decl, Imm, Instr, Program, View
from cimc.machine.sync import (
    Access,
    _Skeleton,
    bytes_overlap,
    check_sync,
    find_race,
    happens_before,
    match_messages,
)


def _bytes(v: View) -> set[int]:
    return {b for lo, hi in v.row_ranges() for b in range(lo, hi)}


def _random_view(rng: random.Random, space: str = "gb") -> View:
    dtype = rng.choice(["i8", "i16", "i32"])
    size = {"i8": 1, "i16": 2, "i32": 4}[dtype]
    rows, cols = rng.randint(1, 6), rng.randint(1, 6)
    stride = rng.choice([cols, cols, 2 * cols, cols + rng.randint(1, 5)])
    return View(space, rng.randint(0, 80) * size, dtype, rows, cols, stride)  # type: ignore[arg-type]


def test_strided_overlap_test_is_exact() -> None:
    rng = random.Random(1)
    for _ in range(20000):
        a, b = _random_view(rng), _random_view(rng)
        if rng.random() < 0.5:  # same row step: the O(1) path
            b = View("gb", b.addr, a.dtype, b.rows, min(b.cols, a.stride), a.stride)
        assert bytes_overlap(a, b) == bool(_bytes(a) & _bytes(b)), (a, b)


def _quadratic_race(accesses: list[Access]) -> tuple[Access, Access] | None:
    """The definition: first (core of a, a, core of b, b) pair, unordered, overlapping,
    one of them a write."""
    by_core: dict[int, list[Access]] = {}
    for acc in accesses:
        by_core.setdefault(acc.core, []).append(acc)
    for j in sorted(by_core):
        for a in by_core[j]:
            for i in sorted(c for c in by_core if c != j):
                for b in by_core[i]:
                    unordered = not happens_before(a, b) and not happens_before(b, a)
                    same = a.view.space == b.view.space and _bytes(a.view) & _bytes(b.view)
                    if unordered and (a.write or b.write) and same:
                        return a, b
    return None


def _random_program(rng: random.Random, skew: bool = False) -> Program:
    """Cores append in one global order: a recv always follows its send, so no deadlock.
    With `skew`, each core first does up to 20 scratchpad-only copies: positions in the
    streams then say little about the order of execution."""
    cores = rng.randint(2, 4)
    local = Instr("dma", (View("sp", 64, "i8", 1, 4), View("sp", 0, "i8", 1, 4)))
    streams: list[list[Instr]] = [[local] * (rng.randint(0, 20) * skew) for _ in range(cores)]
    tags = 0
    for _ in range(rng.randint(4, 40)):
        roll = rng.random()
        if roll < 0.08:
            for s in streams:
                s.append(Instr("barrier", ()))
        elif roll < 0.2:
            src, dst = rng.sample(range(cores), 2)
            tags += 1
            data = View("sp", 0, "i8", 1, 4)
            streams[src].append(Instr("send", (Imm(dst), data, Imm(tags))))
            streams[dst].append(Instr("recv", (Imm(src), data, Imm(tags))))
        else:
            shared = _random_view(rng, rng.choice(["gb", "dram"]))
            local = View("sp", 0, shared.dtype, shared.rows, shared.cols)
            pair = (shared, local) if rng.random() < 0.4 else (local, shared)
            streams[rng.randrange(cores)].append(Instr("dma", pair))
    for s in streams:
        s.append(Instr("halt", ()))
    return Program("tiny", None, (), tuple(CoreStream(c, tuple(s)) for c, s in enumerate(streams)))


def test_indexed_race_check_finds_the_same_first_race() -> None:
    rng = random.Random(7)
    racy = 0
    for _ in range(300):
        program = _random_program(rng)
        accesses = _Skeleton(program, match_messages(program)).run()
        want = _quadratic_race(accesses)
        got = find_race(accesses)
        racy += want is not None
        key = None if want is None else [(x.core, x.index) for x in want]
        assert (None if got is None else [(x.core, x.index) for x in got]) == key
    assert 30 < racy < 290  # both outcomes are exercised


def test_reads_of_a_constant_race_with_a_write_to_it() -> None:
    """Constant reads are skipped only while nothing writes a constant: check_sync alone
    (without the validator's read-only check, which runs first) still sees this race."""
    w = View("dram", 0, "i8", 1, 8, symbol="w")
    local = View("sp", 0, "i8", 1, 8)
    const = Decl("const", "w", "dram", 0, "i8", 1, 8, 8)
    program = Program(
        "tiny",
        None,
        (const,),
        (
            CoreStream(0, (Instr("dma", (local, w)), Instr("halt", ()))),
            CoreStream(1, (Instr("dma", (w, local)), Instr("halt", ()))),
        ),
    )
    with pytest.raises(CimcError, match="races with core 0's dram read"):
        check_sync(program)


def test_constant_reads_by_many_cores_are_race_free() -> None:
    text = ".arch tiny\n.const w dram[0x0] i8[4x8]\n" + "".join(
        f".core {c}\n  dma sp[0x0]:i8[4x8], dram[w]:i8[4x8]\n  halt\n" for c in range(2)
    )
    check_sync(parse_program(text, "t.cimasm"))


@pytest.mark.parametrize("compact_min", [1, 3, sync.RACE_FREE_COMPACT_MIN])
@pytest.mark.parametrize("skew", [False, True])
def test_race_free_pass_agrees_with_the_definition(
    monkeypatch: pytest.MonkeyPatch, compact_min: int, skew: bool
) -> None:
    """The one-pass check find_race runs first (its index compacted as often as every
    access) says race-free exactly when no pair races; the racy programs are then searched
    as before (the test above)."""
    monkeypatch.setattr(sync, "RACE_FREE_COMPACT_MIN", compact_min)
    rng = random.Random(11)
    free = 0
    for _ in range(300):
        program = _random_program(rng, skew)
        accesses = _Skeleton(program, match_messages(program)).run()
        want = _quadratic_race(accesses) is None
        assert sync._race_free(accesses, 64) == want
        free += want
    assert 30 < free < 290


def test_order_of_execution_not_of_stream_positions() -> None:
    """Core 0 writes at position 10 and sends; core 1 reads at position 1 after the recv:
    ordered, although the reader's position is the smaller (the one-pass check takes the
    accesses in execution order, not by position)."""
    local = Instr("dma", (View("sp", 64, "i8", 1, 4), View("sp", 0, "i8", 1, 4)))
    shared, buf = View("gb", 0, "i8", 1, 4), View("sp", 0, "i8", 1, 4)
    writer = [local] * 10 + [Instr("dma", (shared, buf)), Instr("send", (Imm(1), buf, Imm(1)))]
    reader = [Instr("recv", (Imm(0), buf, Imm(1))), Instr("dma", (buf, shared))]
    halt = (Instr("halt", ()),)
    streams = (CoreStream(0, (*writer, *halt)), CoreStream(1, (*reader, *halt)))
    program = Program("tiny", None, (), streams)
    accesses = _Skeleton(program, match_messages(program)).run()
    assert [(a.core, a.index) for a in accesses] == [(0, 10), (1, 1)]
    assert sync._race_free(accesses, 64)
    check_sync(program)
    early = CoreStream(1, (reader[1], reader[0], *halt))  # reads before the recv: a race
    racy = Program("tiny", None, (), (streams[0], early))
    assert not sync._race_free(_Skeleton(racy, match_messages(racy)).run(), 64)
