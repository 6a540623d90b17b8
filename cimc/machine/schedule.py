"""Schedule simulation: when each instruction runs, given units, dependences and channels.

Rules (isa/SPEC.md, "Cost model"):
- in-order issue per core: an instruction starts at least one cycle after the previous one
  of its core started, and after a blocking recv or barrier completed;
- it starts when its unit is free (each core has a DMA engine, a NoC port, a vector unit
  and one unit per macro) and every earlier instruction of the same core touching an
  overlapping byte range (RAW, WAR, WAW) has finished; a view's range is its bounding
  range. Macro cells are ordered by the macro's unit;
- the DRAM and flash channels and the global-buffer port are chip-wide: a transfer holds
  them during its data phase (contention);
- a send starts after every earlier instruction of its core that touches gb or dram has
  finished (a fence for shared memory: the validator orders those accesses before
  everything after the matching recv, so the schedule must too);
- recv completes one cycle after the matching send's data arrived; a barrier waits until
  all previous instructions of its core finished and releases every core at the latest
  arrival.

Cores are simulated together in time order (a heap on each core's next start), so channel
contention is resolved first come, first served.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

from cimc.errors import CimcError
from cimc.machine import cost as _cost  # noqa: F401  (registers the cost functions)
from cimc.machine.arch import Arch
from cimc.machine.cost import Energy, InstrCost, instr_cost
from cimc.machine.opcodes import Access, spec_of
from cimc.machine.program import Imm, Instr, Program

_PRUNE_AT = 8
_SHARED = ("gb", "dram")  # writable shared spaces: where cores can race (flash is read-only)
Range = tuple[str, int, int, bool]  # space, first byte, one past the last, is a write


@dataclass(frozen=True)
class Scheduled:
    """One instruction placed in time (cycles from the start of the program)."""

    core: int
    pc: int
    instr: Instr
    cost: InstrCost
    start: int
    end: int


@dataclass(frozen=True)
class Schedule:
    items: tuple[Scheduled, ...]
    makespan: int
    channel_busy: dict[str, int]  # data-phase cycles per chip-wide channel


@dataclass
class _Access:
    lo: int
    hi: int
    end: int
    write: bool


@dataclass
class _Core:
    core: int
    instrs: tuple[Instr, ...]
    costs: tuple[InstrCost, ...]
    ranges: tuple[tuple[Range, ...], ...]
    pc: int = 0
    floor: int = 0  # earliest start of the next instruction (in-order issue)
    finish: int = 0  # latest end of everything issued so far
    shared_finish: int = 0  # latest end of everything issued so far that touches gb/dram
    unit_free: dict[str, int] = field(default_factory=dict)
    accesses: dict[str, list[_Access]] = field(default_factory=dict)
    barriers: int = 0


@dataclass
class _Sim:
    arch: Arch
    program: Program
    cores: dict[int, _Core]
    relaxed: bool
    channel_free: dict[str, int] = field(default_factory=dict)
    channel_busy: dict[str, int] = field(default_factory=dict)
    sends: dict[tuple[int, int, int], deque[int]] = field(default_factory=dict)
    waiting_recv: dict[tuple[int, int, int], int] = field(default_factory=dict)
    barrier_arrivals: dict[int, dict[int, int]] = field(default_factory=dict)
    heap: list[tuple[int, int]] = field(default_factory=list)
    items: list[Scheduled] = field(default_factory=list)


def simulate(program: Program, arch: Arch, relaxed: bool = False) -> Schedule:
    """Place every instruction of `program` in time on `arch`.

    `relaxed` drops unit and channel contention and keeps only in-order issue, address
    dependences and synchronisation: its makespan is the dependence-bound critical path,
    a lower bound of the real makespan (every constraint it keeps, the real schedule has).
    """
    cores = {
        s.core: _Core(
            s.core,
            s.instrs,
            tuple(instr_cost(i, s.core, arch) for i in s.instrs),
            tuple(_ranges(i) for i in s.instrs),
        )
        for s in program.cores
    }
    sim = _Sim(arch, program, cores, relaxed)
    for c in sorted(cores):
        _push(sim, cores[c])
    while sim.heap:
        start, core_id = heapq.heappop(sim.heap)
        _step(sim, cores[core_id], start)
    stuck = [c for c in cores.values() if c.pc < len(c.instrs)]
    if stuck:
        first = stuck[0]
        where = sim.program.loc(first.instrs[first.pc])
        names = ", ".join(f"core {c.core} at line {c.instrs[c.pc].line}" for c in stuck)
        raise CimcError(f"schedule deadlock: {names} never unblock", where)
    items = tuple(sorted(sim.items, key=lambda s: (s.start, s.core, s.pc)))
    makespan = max((s.end for s in items), default=0)
    return Schedule(items, makespan, dict(sorted(sim.channel_busy.items())))


def total_energy(schedule: Schedule) -> Energy:
    total = Energy()
    for item in schedule.items:
        total = total + item.cost.energy
    return total


# --- per-instruction placement -------------------------------------------------------------


def _push(sim: _Sim, core: _Core) -> None:
    """Queue the core's next instruction at its earliest start (or park it if blocked)."""
    if core.pc >= len(core.instrs):
        return
    instr = core.instrs[core.pc]
    if instr.opcode == "recv":
        key = _recv_key(core.core, instr)
        if not sim.sends.get(key):
            sim.waiting_recv[key] = core.core
            return
    heapq.heappush(sim.heap, (_ready(sim, core, instr), core.core))


def _ready(sim: _Sim, core: _Core, instr: Instr) -> int:
    cost = core.costs[core.pc]
    t = core.floor if sim.relaxed else max(core.floor, core.unit_free.get(cost.unit, 0))
    if instr.opcode == "barrier":
        return max(t, core.finish)  # a barrier is a fence
    if instr.opcode == "send":
        t = max(t, core.shared_finish)  # a send is a fence for gb/dram (happens-before)
    for space, lo, hi, write in core.ranges[core.pc]:
        for old in core.accesses.get(space, ()):
            if old.lo < hi and lo < old.hi and (old.write or write) and old.end > t:
                t = old.end
    if not sim.relaxed:
        for channel in cost.channels:
            t = max(t, sim.channel_free.get(channel, 0) - cost.lead)
    return t


def _step(sim: _Sim, core: _Core, start: int) -> None:
    instr = core.instrs[core.pc]
    start = max(start, _ready(sim, core, instr))  # channels may have moved since the push
    if sim.heap and start > sim.heap[0][0]:
        heapq.heappush(sim.heap, (start, core.core))  # another core goes first
        return
    if instr.opcode == "barrier":
        _arrive(sim, core, start)
        return
    cost = core.costs[core.pc]
    end = start + cost.cycles
    if instr.opcode == "recv":
        end = max(end, sim.sends[_recv_key(core.core, instr)].popleft() + 1)
        core.floor = end  # recv blocks issue
    else:
        core.floor = start + 1
    _record(sim, core, instr, cost, start, end)
    if instr.opcode == "send":
        _send(sim, core, instr, end)
    _push(sim, core)


def _record(sim: _Sim, core: _Core, instr: Instr, cost: InstrCost, start: int, end: int) -> None:
    sim.items.append(Scheduled(core.core, core.pc, instr, cost, start, end))
    core.unit_free[cost.unit] = end
    core.finish = max(core.finish, end)
    for channel in cost.channels:
        sim.channel_free[channel] = start + cost.lead + cost.data_cycles
        sim.channel_busy[channel] = sim.channel_busy.get(channel, 0) + cost.data_cycles
    for space, lo, hi, write in core.ranges[core.pc]:
        if space in _SHARED:
            core.shared_finish = max(core.shared_finish, end)
        entries = core.accesses.setdefault(space, [])
        entries.append(_Access(lo, hi, end, write))
        if len(entries) > _PRUNE_AT:  # finished before anything still to come can start
            entries[:] = [a for a in entries if a.end > core.floor]
    core.pc += 1


def _send(sim: _Sim, core: _Core, instr: Instr, arrival: int) -> None:
    peer, tag = instr.operands[0], instr.operands[2]
    assert isinstance(peer, Imm) and isinstance(tag, Imm)
    key = (core.core, peer.value, tag.value)
    sim.sends.setdefault(key, deque()).append(arrival)
    waiting = sim.waiting_recv.pop(key, None)
    if waiting is not None:
        _push(sim, sim.cores[waiting])


def _arrive(sim: _Sim, core: _Core, arrival: int) -> None:
    core.barriers += 1
    arrivals = sim.barrier_arrivals.setdefault(core.barriers, {})
    arrivals[core.core] = arrival
    if len(arrivals) < len(sim.cores):
        return  # parked until the last core arrives
    release = max(arrivals.values())
    for core_id in sorted(arrivals):
        c = sim.cores[core_id]
        barrier = c.instrs[c.pc]
        _record(sim, c, barrier, c.costs[c.pc], arrivals[core_id], release)
        c.floor = release
        _push(sim, c)


def _recv_key(core: int, instr: Instr) -> tuple[int, int, int]:
    peer, tag = instr.operands[0], instr.operands[2]
    assert isinstance(peer, Imm) and isinstance(tag, Imm)
    return (peer.value, core, tag.value)


def _ranges(instr: Instr) -> tuple[Range, ...]:
    """Bounding byte range of every view operand, with whether the instruction writes it."""
    return tuple(
        (view.space, view.addr, view.end, access != Access.READ)
        for view, access in spec_of(instr).views(instr)
    )
