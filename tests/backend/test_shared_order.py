"""Cross-core ordering emitted by the builder (cimc/backend/builder/shared_order.py): a
send/recv token between the two cores that conflict, a barrier only when a core conflicts
with all others, and the validator's race check still catching a missing token."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cimc.backend.builder.alloc import cols
from cimc.backend.builder.asm import ProgramBuilder
from cimc.errors import CimcError
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
