"""The indexed race check (cimc/machine/sync.py) against the plain quadratic definition.

Random multi-core skeletons (dma between sp and strided gb/dram views, barriers, send/recv
chains; racy on purpose) must give the same first race, pair for pair, as a scan of every
pair of accesses; the O(1) strided overlap test must agree with a byte-set comparison.
"""

from __future__ import annotations

import random

import pytest

from cimc.errors import CimcError
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


def _random_program(rng: random.Random) -> Program:
    """Cores append in one global order: a recv always follows its send, so no deadlock."""
    cores = rng.randint(2, 4)
    streams: list[list[Instr]] = [[] for _ in range(cores)]
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
