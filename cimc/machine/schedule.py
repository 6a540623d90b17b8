"""Schedule simulation: when each instruction runs, given units, dependences and channels.

Rules (isa/SPEC.md, "Cost model"):
- in-order issue per core: an instruction issues at least one cycle after the previous one
  of its core issued, and after a blocking recv or barrier completed. Non-DMA instructions
  start when they issue. A DMA-engine instruction (dma, gather, scatter) is handed to one of
  the engine's `core.dma_channels` channels and the core keeps issuing: it waits only while
  that many of its DMA-engine instructions are unfinished; the transfers of different
  channels overlap (the chip-wide channels still serialise their data phases). With 0 the
  engine is one channel and the core waits until the dma starts (a blocking issue);
- it starts when its unit is free (each core has a DMA engine, a NoC port, a vector unit
  and one unit per macro) and every earlier instruction of the same core touching an
  overlapping byte range (RAW, WAR, WAW) has finished; a view's range is its bounding
  range. Macro cells are ordered by the macro's unit;
- the DRAM and flash channels and the global-buffer port are chip-wide: a transfer holds
  them during its data phase (contention), in the earliest free slot (`_Channel`);
- send, mcast and barrier are fences for writable shared memory: they start after every earlier
  instruction of their core that touches gb or dram outside a `.const` has finished (the
  validator orders those accesses before everything after the matching recv / the
  barrier, so the schedule must too; constant reads cannot race, so a weight prefetch in
  flight does not hold a fence);
- recv completes one cycle after the matching send's data arrived; a barrier releases
  every core at the latest arrival.

Cores are simulated together, roughly in time order (a heap on each core's next start).
A DMA in flight lets its core's later instructions start before it: those use no chip-wide
resource except the gb port of an `mload` from gb, so channels are booked as busy
intervals (a request takes the earliest gap that fits, whatever the processing order).
"""

from __future__ import annotations

import bisect
import heapq
from collections import deque
from dataclasses import dataclass, field

from cimc.errors import CimcError
from cimc.machine import cost as _cost  # noqa: F401  (registers the cost functions)
from cimc.machine.arch import Arch
from cimc.machine.cost import Energy, InstrCost, instr_cost
from cimc.machine.dynamic import Dynamic
from cimc.machine.opcodes import Access, spec_of
from cimc.machine.program import SENDS, Imm, Instr, Program, destinations
from cimc.progress import poll

_PRUNE_AT = 8
_PRUNE_CHANNELS = 512  # bookings between two prunes of the channels' past intervals
_SHARED = ("gb", "dram")  # writable shared spaces: where cores can race (flash is read-only)
_DMA = "dma"  # the unit of dma, gather, scatter: `core.dma_channels` transfers at once
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
    fenced: tuple[bool, ...]  # touches gb/dram outside a .const (what fences wait for)
    pc: int = 0
    floor: int = 0  # earliest issue of the next instruction (in-order issue)
    fence_finish: int = 0  # latest end of the fenced instructions issued so far
    dma_ends: list[int] = field(default_factory=list)  # ends of its DMAs in flight, sorted
    unit_free: dict[str, int] = field(default_factory=dict)
    accesses: dict[str, list[_Access]] = field(default_factory=dict)
    barriers: int = 0
    since: int = 0  # when the next instruction first asked for its channels


@dataclass
class _Sim:
    arch: Arch
    program: Program
    cores: dict[int, _Core]
    relaxed: bool
    channels: dict[str, _Channel] = field(default_factory=dict)
    bookings: int = 0
    channel_busy: dict[str, int] = field(default_factory=dict)
    sends: dict[tuple[int, int, int], deque[int]] = field(default_factory=dict)
    waiting_recv: dict[tuple[int, int, int], int] = field(default_factory=dict)
    barrier_arrivals: dict[int, dict[int, int]] = field(default_factory=dict)
    heap: list[tuple[int, int, int, int]] = field(default_factory=list)  # _order(), core
    items: list[Scheduled] = field(default_factory=list)


def simulate(
    program: Program, arch: Arch, relaxed: bool = False, dynamic: Dynamic | None = None
) -> Schedule:
    """Place every instruction of `program` in time on `arch`.

    `dynamic` holds one run's index columns of the data-dependent instructions by (core,
    pc) (`RunResult.dynamic`): the schedule of that run. Without it they are priced as if
    every row were named (cimc/machine/dynamic.py).

    `relaxed` drops unit and channel contention and keeps only in-order issue, address
    dependences and synchronisation: its makespan is the dependence-bound critical path,
    a lower bound of the real makespan (every constraint it keeps, the real schedule has).
    """
    consts = _const_spans(program)
    cores = {}
    for s in program.cores:
        ranges = tuple(_ranges(i) for i in s.instrs)
        cores[s.core] = _Core(
            s.core,
            s.instrs,
            tuple(
                instr_cost(i, s.core, arch, (dynamic or {}).get((s.core, pc)))
                for pc, i in enumerate(s.instrs)
            ),
            ranges,
            tuple(any(_fenced(r, consts) for r in rs) for rs in ranges),
        )
    sim = _Sim(arch, program, cores, relaxed)
    for c in sorted(cores):
        _push(sim, cores[c])
    total = sum(len(c.instrs) for c in cores.values())
    with poll("simulate (relaxed)" if relaxed else "simulate", total, lambda: len(sim.items)):
        while sim.heap:
            key, _, _, core_id = heapq.heappop(sim.heap)
            core = cores[core_id]
            _step(sim, core, key - _lead(sim, core))
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
    core.since = _ready(sim, core, instr) + _lead(sim, core)
    _queue(sim, core, core.since)


def _queue(sim: _Sim, core: _Core, key: int) -> None:
    heapq.heappush(sim.heap, (*_order(core, key), core.core))


def _order(core: _Core, key: int) -> tuple[int, int, int]:
    """Who goes first among instructions due at `key`. A transfer on a chip-wide channel is
    due when its data phase would begin, so transfers reach a channel in that order whatever
    their setup and latency; at equal times the shortest data phase goes first, then the one
    waiting longest, then the lower core id (the heap's last key). See isa/SPEC.md, section
    8, "Schedule"."""
    return (key, core.costs[core.pc].data_cycles if core.pc < len(core.instrs) else 0, core.since)


def _lead(sim: _Sim, core: _Core) -> int:
    """How far after its start a transfer reaches its channels (0: not a transfer)."""
    if sim.relaxed or core.pc >= len(core.instrs):
        return 0
    cost = core.costs[core.pc]
    return cost.lead if cost.channels else 0


def _queued(sim: _Sim, core: _Core) -> bool:
    return core.costs[core.pc].unit == _DMA and sim.arch.core.dma_channels > 0


def _issue(sim: _Sim, core: _Core) -> int:
    """When the core hands its next instruction on: in order, and for a DMA when one of the
    engine's channels is free (all busy: when the first of them finishes)."""
    if not _queued(sim, core):
        return core.floor
    ends, n = core.dma_ends, sim.arch.core.dma_channels
    del ends[: bisect.bisect_right(ends, core.floor)]  # finished before the core got here
    return max(core.floor, ends[-n]) if len(ends) >= n else core.floor


def _ready(sim: _Sim, core: _Core, instr: Instr) -> int:
    cost = core.costs[core.pc]
    t = _issue(sim, core)
    if not sim.relaxed and not _queued(sim, core):  # queued: _issue counted the channels
        t = max(t, core.unit_free.get(cost.unit, 0))
    if instr.opcode == "barrier" or instr.opcode in SENDS:  # fences for shared memory
        t = max(t, core.fence_finish)
    if instr.opcode == "barrier":
        return t
    for space, lo, hi, write in core.ranges[core.pc]:
        for old in core.accesses.get(space, ()):
            if old.lo < hi and lo < old.hi and (old.write or write) and old.end > t:
                t = old.end
    if not sim.relaxed and cost.channels:
        t = _channel_slot(sim, cost, t)
    return t


def _channel_slot(sim: _Sim, cost: InstrCost, t: int) -> int:
    """Earliest start >= t whose data phase fits a free gap of every channel it holds."""
    while True:
        moved = t
        for i, name in enumerate(cost.channels):
            channel = sim.channels.get(name)
            if channel is not None:
                moved = channel.earliest(moved + cost.lead, cost.held(i)) - cost.lead
        if moved == t:
            return t
        t = moved


def _step(sim: _Sim, core: _Core, start: int) -> None:
    instr = core.instrs[core.pc]
    start = max(start, _ready(sim, core, instr))  # channels may have moved since the push
    key = start + _lead(sim, core)
    if sim.heap and _order(core, key) > sim.heap[0][:3]:
        _queue(sim, core, key)  # another core goes first
        return
    if instr.opcode == "barrier":
        _arrive(sim, core, start)
        return
    cost = core.costs[core.pc]
    end = start + cost.cycles
    if instr.opcode == "recv":
        end = max(end, sim.sends[_recv_key(core.core, instr)].popleft() + 1)
        core.floor = end  # recv blocks issue
    elif _queued(sim, core):
        core.floor = _issue(sim, core) + 1  # the engine has it: the core goes on
        bisect.insort(core.dma_ends, end)
    else:
        core.floor = start + 1
    _record(sim, core, instr, cost, start, end)
    if instr.opcode in SENDS:
        _send(sim, core, instr, end)
    _push(sim, core)


def _record(sim: _Sim, core: _Core, instr: Instr, cost: InstrCost, start: int, end: int) -> None:
    sim.items.append(Scheduled(core.core, core.pc, instr, cost, start, end))
    core.unit_free[cost.unit] = end
    if core.fenced[core.pc]:
        core.fence_finish = max(core.fence_finish, end)
    for i, name in enumerate(cost.channels):
        held = cost.held(i)
        if held:
            channel = sim.channels.setdefault(name, _Channel())
            channel.book(start + cost.lead, start + cost.lead + held)
            sim.bookings += 1
        sim.channel_busy[name] = sim.channel_busy.get(name, 0) + held
    if sim.bookings >= _PRUNE_CHANNELS:  # no request can start before the slowest core
        sim.bookings = 0
        floor = min(c.floor for c in sim.cores.values() if c.pc < len(c.instrs))
        for channel in sim.channels.values():
            channel.prune(floor)
    for space, lo, hi, write in core.ranges[core.pc]:
        entries = core.accesses.setdefault(space, [])
        entries.append(_Access(lo, hi, end, write))
        if len(entries) > _PRUNE_AT:  # finished before anything still to come can start
            entries[:] = [a for a in entries if a.end > core.floor]
    core.pc += 1


def _send(sim: _Sim, core: _Core, instr: Instr, arrival: int) -> None:
    tag = instr.operands[2]
    assert isinstance(tag, Imm)
    for peer in destinations(instr):
        key = (core.core, peer, tag.value)
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


def _const_spans(program: Program) -> dict[str, list[tuple[int, int]]]:
    """Per shared space, the sorted byte spans of `.const` declarations (read-only data)."""
    spans: dict[str, list[tuple[int, int]]] = {}
    for d in sorted(program.decls_of("const"), key=lambda d: (d.space, d.addr)):
        spans.setdefault(d.space, []).append((d.addr, d.end))
    return spans


def _fenced(r: Range, consts: dict[str, list[tuple[int, int]]]) -> bool:
    """Does a fence wait for this access: gb/dram, unless it reads inside one constant?"""
    space, lo, hi, write = r
    if space not in _SHARED:
        return False
    if write:
        return True
    spans = consts.get(space, [])
    k = bisect.bisect_right(spans, (lo, float("inf"))) - 1
    return not (k >= 0 and spans[k][0] <= lo and hi <= spans[k][1])


class _Channel:
    """Busy intervals of one chip-wide channel: disjoint, sorted, adjacent ones merged."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def earliest(self, t: int, length: int) -> int:
        """First time >= t at which `length` cycles are free."""
        i = bisect.bisect_right(self.ends, t)  # the first interval still busy after t
        while i < len(self.starts) and self.starts[i] < t + length:
            t = max(t, self.ends[i])
            i += 1
        return t

    def book(self, lo: int, hi: int) -> None:
        i = bisect.bisect_left(self.ends, lo)  # intervals before i end before lo
        j = bisect.bisect_right(self.starts, hi)  # intervals from j start after hi
        if i < j:  # touching neighbours merge (earliest() never books an overlap)
            lo, hi = min(lo, self.starts[i]), max(hi, self.ends[j - 1])
        self.starts[i:j] = [lo]
        self.ends[i:j] = [hi]

    def prune(self, before: int) -> None:
        k = bisect.bisect_right(self.ends, before)
        del self.starts[:k], self.ends[:k]


def _ranges(instr: Instr) -> tuple[Range, ...]:
    """Bounding byte range of every view operand, with whether the instruction writes it."""
    return tuple(
        (view.space, view.addr, view.end, access != Access.READ)
        for view, access in spec_of(instr).views(instr)
    )
