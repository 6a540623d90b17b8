"""Cross-core ordering emitted by the builder (cimc/backend/builder/shared_order.py): a
send/recv token between the two cores that conflict, a barrier only when a core conflicts
with all others, and the validator's race check still catching a missing token."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cimc.backend.builder.alloc import cols, sub
from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.builder.shared_order import SharedOrder, Touch
from cimc.errors import CimcError
from cimc.machine.printer import print_program
from cimc.machine.program import CoreStream, Program, View
from cimc.machine.validator import validate
from tests.backend.lower_harness import arch, run


def _copy(b: ProgramBuilder, core: int, dst: View, src: View) -> None:
    buf = b.alloc(core, src.dtype, src.rows, src.cols)
    b.emit(core, "dma", buf, src)
    b.emit(core, "dma", dst, buf)
    b.free(core, buf)


def _ops(program: Program, core: int) -> list[str]:
    return [i.opcode for i in program.instrs(core)]


def _four_writers() -> tuple[ProgramBuilder, View, View, View]:
    """Cores 0-3 each copy their column block of x into t (disjoint: no sync)."""
    b = ProgramBuilder(arch("default"))
    x, y = b.input("x", "i8", 4, 32), b.output("y", "i8", 4, 32)
    t = b.region("t", "i8", 4, 32)
    for core in range(4):
        _copy(b, core, cols(t, 8 * core, 8 * core + 8), cols(x, 8 * core, 8 * core + 8))
    return b, x, y, t


def test_two_conflicting_cores_get_a_token_not_a_barrier() -> None:
    b, x, y, t = _four_writers()
    program, _ = b.build()
    assert not any(op in ("barrier", "send", "recv") for c in range(4) for op in _ops(program, c))
    _copy(b, 1, cols(y, 0, 8), cols(t, 0, 8))  # core 1 reads what core 0 wrote
    for core in range(1, 4):  # the rest of y, each core its own block: no conflict
        _copy(b, core, cols(y, 8 * core, 8 * core + 8), cols(t, 8 * core, 8 * core + 8))
    program, _ = b.build()
    assert not any("barrier" in _ops(program, c) for c in range(4))
    assert _ops(program, 0).count("send") == 1 and _ops(program, 1).count("recv") == 1
    assert all(_ops(program, c).count("send") + _ops(program, c).count("recv") == 0 for c in (2, 3))
    send = next(i for i in program.instrs(0) if i.opcode == "send")
    assert send.operands[0].value == 1  # type: ignore[union-attr]
    recv_at = _ops(program, 1).index("recv")
    assert _ops(program, 1)[recv_at + 1] == "dma"  # right before the read of t
    validate(program, b.arch)
    data = np.arange(128, dtype=np.int8).reshape(4, 32)
    assert (run(b, {"x": data})["y"] == data).all()


def test_removing_the_token_is_caught_by_the_race_check() -> None:
    b, x, y, t = _four_writers()
    _copy(b, 1, cols(y, 0, 8), cols(t, 0, 8))
    program, _ = b.build()
    validate(program, b.arch)
    sync = ("send", "recv")
    streams = tuple(
        CoreStream(s.core, tuple(i for i in s.items if getattr(i, "opcode", None) not in sync))
        for s in program.cores
    )
    broken = dataclasses.replace(program, cores=streams)
    with pytest.raises(CimcError, match="races with core 0"):
        validate(broken, b.arch)


def test_a_core_conflicting_with_all_others_gets_a_barrier() -> None:
    """Core 3 reads what cores 0, 1 and 2 wrote: one barrier instead of three tokens."""
    b, x, y, t = _four_writers()
    _copy(b, 3, cols(y, 0, 24), cols(t, 0, 24))
    program, _ = b.build()
    assert [_ops(program, c).count("barrier") for c in range(4)] == [1, 1, 1, 1]
    assert not any("recv" in _ops(program, c) for c in range(4))
    validate(program, b.arch)


def test_a_token_received_is_not_sent_again() -> None:
    """After core 0 -> core 1, a second read by core 1 of core 0's earlier write is ordered."""
    b, x, y, t = _four_writers()
    _copy(b, 1, cols(y, 0, 4), cols(t, 0, 4))
    _copy(b, 1, cols(y, 4, 8), cols(t, 4, 8))
    program, _ = b.build()
    assert _ops(program, 1).count("recv") == 1
    validate(program, b.arch)


def test_late_core_gets_earlier_barriers() -> None:
    b, x, y, t = _four_writers()
    program, _ = b.build()
    b2 = ProgramBuilder(arch("default"), cores=[0, 1, 2, 3])
    xx = b2.input("x", "i8", 2, 16)
    tt = b2.region(None, "i8", 2, 16)
    _copy(b2, 0, cols(tt, 0, 8), cols(xx, 0, 8))
    _copy(b2, 1, cols(tt, 8, 16), cols(xx, 8, 16))
    _copy(b2, 2, b2.region(None, "i8", 2, 16), tt)  # conflicts with both others: barrier
    _copy(b2, 3, b2.region(None, "i8", 2, 16), xx)  # core 3 joins after the barrier
    program, _ = b2.build()
    validate(program, b2.arch)  # every core reaches the same number of barriers
    assert program.instrs(3)[0].opcode == "barrier"


class _EveryTouch(SharedOrder):
    """The ordering's definition, without an index: every touch since the last barrier
    is a candidate (bytes_overlap decides, as in SharedOrder)."""

    def __init__(self, b: ProgramBuilder) -> None:
        super().__init__(b, b._new_tag)
        self.every: list[Touch] = []

    def cleared(self) -> None:
        super().cleared()
        self.every.clear()

    def _record(self, mine: list[Touch]) -> None:
        super()._record(mine)
        self.every.extend(mine)

    def _unordered_touches(self, t: Touch) -> dict[int, list[Touch]]:
        seen = self.seen.get(t.core, {})
        out: dict[int, list[Touch]] = {}
        for o in self.every:
            if o.core != t.core and (o.write or t.write) and o.pos >= seen.get(o.core, 0):
                out.setdefault(o.core, []).append(o)
        return out


def _random_program(seed: int, brute_force: bool) -> Program:
    """Cores copying random (strided) rectangles of one 16 KiB region in and out."""
    rng = np.random.default_rng(seed)
    b = ProgramBuilder(arch("default"))
    if brute_force:
        b._order = _EveryTouch(b)
    t = b.region("t", "i8", 64, 256)  # 4 index blocks: rectangles span several
    for _ in range(80):
        core = int(rng.integers(4))
        r0, c0 = int(rng.integers(64)), int(rng.integers(256))
        part = sub(t, r0, int(rng.integers(r0, 64)) + 1, c0, int(rng.integers(c0, 256)) + 1)
        buf = b.alloc(core, "i8", part.rows, part.cols)
        src, dst = (buf, part) if rng.random() < 0.4 else (part, buf)
        b.emit(core, "dma", dst, src)
        b.free(core, buf)
    return b.build()[0]


def test_the_index_orders_as_the_definition_does() -> None:
    """Random programs: the same sync as comparing with every touch, and race-free (the
    validator's independent check fails these programs when the ordering is left out)."""
    syncs = 0
    for seed in range(12):
        program = _random_program(seed, brute_force=False)
        assert print_program(program) == print_program(_random_program(seed, brute_force=True))
        validate(program, arch("default"))
        syncs += sum(_ops(program, c).count("recv") for c in range(4))
    assert syncs > 0


def test_without_the_ordering_the_random_programs_race(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SharedOrder, "before", lambda self, core, instr: None)
    with pytest.raises(CimcError, match="races with core"):
        validate(_random_program(0, brute_force=False), arch("default"))


def test_a_stage_reading_every_other_active_core_gets_tokens_not_a_barrier() -> None:
    """Pipeline stages (ProgramBuilder.on_cores): stage 0 on cores 0 and 1 writes t, then
    stage 1 on core 2 reads all of it. A barrier would hold stage 0's next micro-batch
    back until stage 1 got here; tokens from cores 0 and 1 to core 2 order only the read."""
    b = ProgramBuilder(arch("default"))
    x, y = b.input("x", "i8", 4, 32), b.output("y", "i8", 4, 32)
    t = b.region("t", "i8", 4, 32)
    with b.on_cores([0, 1]):
        for core in (0, 1):
            _copy(b, core, cols(t, 16 * core, 16 * core + 16), cols(x, 16 * core, 16 * core + 16))
    with b.on_cores([2]):
        _copy(b, 2, y, t)  # conflicts with every other active core (0 and 1)
    with b.on_cores([0, 1]):  # stage 0 goes on (its next micro-batch), unordered
        _copy(b, 0, b.region(None, "i8", 4, 16), cols(x, 0, 16))
    program, _ = b.build()
    assert not any("barrier" in _ops(program, c) for c in range(3))
    assert _ops(program, 2).count("recv") == 2
    assert _ops(program, 0).count("send") == 1 and _ops(program, 1).count("send") == 1
    assert _ops(program, 0)[-3:-1] == ["dma", "dma"]  # after its send, no wait for core 2
    validate(program, b.arch)
