"""Chrome / Perfetto trace of a schedule (JSON "traceEvents", open in ui.perfetto.dev).

One process per core with a track per unit (NoC port, vector unit, each macro, sync) and
one track per DMA channel, plus a "chip" process with the shared DRAM / flash /
global-buffer channels. One complete ("X") event per instruction. The format requires the
slices of one track to nest: a unit's instructions never overlap, and the DMA engine's
transfers (up to `core.dma_channels` at once) are laid onto as many channel tracks as they
need, each transfer on the lowest-numbered track free at its start. Timestamps are
microseconds at the arch's clock rounded to whole nanoseconds, a duration the rounded end
minus the rounded start: slices that touch in cycles touch exactly in the trace (no float
error makes them overlap). Flow arrows join every send or mcast to the recv it feeds;
counter tracks show each chip channel's bandwidth (GB/s) and each core's DMA transfers in
flight.
"""

from __future__ import annotations

import heapq
import json
from collections import defaultdict, deque
from collections.abc import Iterable
from pathlib import Path

from cimc.errors import CimcError
from cimc.machine.arch import Arch
from cimc.machine.interpreter import instr_text
from cimc.machine.program import SENDS, Imm, destinations
from cimc.machine.schedule import Schedule, Scheduled

Event = dict[str, object]

_FIXED_TRACKS = {"noc": 2, "vector": 3, "sync": 4}
_NAMES = {"noc": "NoC port", "vector": "vector unit", "sync": "sync"}
_DMA_BASE, _MACRO_BASE = 10, 100  # DMA channel k: track 10 + k; macro m: track 100 + m
_CHANNEL_TRACKS = {"dram": 1, "flash": 2, "gb": 3}


def chrome_trace(schedule: Schedule, arch: Arch, program_name: str = "") -> dict[str, object]:
    us = _Clock(arch.chip.clock_mhz)
    chip_pid = arch.chip.cores
    lanes = _lanes(schedule.items)
    events: list[Event] = []
    for item, tid in zip(schedule.items, lanes, strict=True):
        events.append(_slice(item, tid, us))
        events += _channel_slices(item, chip_pid, us)
    events += _flows(schedule.items, lanes, us)
    events += _bandwidth_counters(schedule.items, chip_pid, us)
    events += _dma_counters(schedule.items, us)
    tracks = sorted({(item.core, tid) for item, tid in zip(schedule.items, lanes, strict=True)})
    meta = _metadata(tracks, chip_pid, program_name)
    return {"traceEvents": meta + events, "displayTimeUnit": "ns"}


class _Clock:
    """Cycles to trace microseconds: whole nanoseconds, written with three decimals."""

    def __init__(self, clock_mhz: float) -> None:
        self.ns_per_cycle = 1000.0 / clock_mhz

    def __call__(self, cycle: float) -> float:
        return round(cycle * self.ns_per_cycle) / 1000

    def span(self, start: float, end: float) -> float:
        return (round(end * self.ns_per_cycle) - round(start * self.ns_per_cycle)) / 1000


def _slice(item: Scheduled, tid: int, us: _Clock) -> Event:
    return {
        "name": item.instr.opcode,
        "ph": "X",
        "pid": item.core,
        "tid": tid,
        "ts": us(item.start),
        "dur": us.span(item.start, item.end),
        "args": {
            "instr": instr_text(item.instr),
            "line": item.instr.line,
            "source": item.instr.comment or "",
            "cycles": item.end - item.start,
            "energy_pj": round(item.cost.energy.total, 3),
        },
    }


def _channel_slices(item: Scheduled, chip_pid: int, us: _Clock) -> list[Event]:
    """The data phase on each chip-wide channel (booked disjoint by the schedule)."""
    start = item.start + item.cost.lead
    return [
        {
            "name": f"{item.instr.opcode} (core {item.core})",
            "ph": "X",
            "pid": chip_pid,
            "tid": _CHANNEL_TRACKS[channel],
            "ts": us(start),
            "dur": us.span(start, start + item.cost.held(i)),
            "args": {"line": item.instr.line},
        }
        for i, channel in enumerate(item.cost.channels)
    ]


# ---- tracks -------------------------------------------------------------------------------


def _lanes(items: Iterable[Scheduled]) -> list[int]:
    """The track of each item: its unit's, or for the DMA engine the lowest channel track
    free when the transfer starts (interval colouring: as many tracks as transfers overlap)."""
    order = sorted(enumerate(items), key=lambda kv: (kv[1].start, kv[1].end, kv[0]))
    free: dict[int, list[int]] = defaultdict(list)  # core -> free lane numbers (heap)
    busy: dict[int, list[tuple[int, int]]] = defaultdict(list)  # core -> (end, lane) heap
    count: dict[int, int] = defaultdict(int)
    lanes = [0] * len(order)
    for k, item in order:
        unit = item.cost.unit
        if unit != "dma":
            lanes[k] = _unit_track(unit)
            continue
        ends = busy[item.core]
        while ends and ends[0][0] <= item.start:
            heapq.heappush(free[item.core], heapq.heappop(ends)[1])
        if free[item.core]:
            lane = heapq.heappop(free[item.core])
        else:
            lane, count[item.core] = count[item.core], count[item.core] + 1
        heapq.heappush(ends, (item.end, lane))
        lanes[k] = _DMA_BASE + lane
    return lanes


def _unit_track(unit: str) -> int:
    return _FIXED_TRACKS.get(unit) or _MACRO_BASE + int(unit.removeprefix("macro"))


def _track_name(tid: int) -> str:
    if tid >= _MACRO_BASE:
        return f"macro {tid - _MACRO_BASE}"
    if tid >= _DMA_BASE:
        return f"DMA channel {tid - _DMA_BASE}"
    return next(_NAMES[u] for u, t in _FIXED_TRACKS.items() if t == tid)


# ---- flows --------------------------------------------------------------------------------


def _flows(items: tuple[Scheduled, ...], lanes: list[int], us: _Clock) -> list[Event]:
    """An arrow from each send / mcast to every recv it feeds: sends of one (source,
    destination, tag) are received in program order (isa/SPEC.md, section 4)."""
    pending: dict[tuple[int, int, int], deque[tuple[Scheduled, int]]] = defaultdict(deque)
    for item, tid in sorted(zip(items, lanes, strict=True), key=lambda kv: (kv[0].core, kv[0].pc)):
        if item.instr.opcode in SENDS:
            tag = _tag(item)
            for dst in destinations(item.instr):
                pending[(item.core, dst, tag)].append((item, tid))
    events: list[Event] = []
    for item, tid in zip(items, lanes, strict=True):
        if item.instr.opcode != "recv":
            continue
        src = item.instr.operands[0]
        assert isinstance(src, Imm)
        queue = pending.get((src.value, item.core, _tag(item)))
        if not queue:
            continue  # an unmatched recv: the validator reports it, the trace shows none
        send, send_tid = queue.popleft()
        flow = len(events) // 2 + 1
        events.append(_flow("s", flow, send.core, send_tid, us(send.start), send))
        events.append(_flow("f", flow, item.core, tid, us(item.end), send) | {"bp": "e"})
    return events


def _tag(item: Scheduled) -> int:
    tag = item.instr.operands[2]
    assert isinstance(tag, Imm)
    return tag.value


def _flow(phase: str, flow: int, pid: int, tid: int, ts: float, send: Scheduled) -> Event:
    name = f"{send.instr.opcode} tag {_tag(send)}"
    return {"name": name, "cat": "noc", "ph": phase, "id": flow, "pid": pid, "tid": tid, "ts": ts}


# ---- counters -----------------------------------------------------------------------------


def _bandwidth_counters(items: Iterable[Scheduled], chip_pid: int, us: _Clock) -> list[Event]:
    """Per chip channel, GB/s during each data phase and 0 between them."""
    steps: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for item in items:
        for i, channel in enumerate(item.cost.channels):
            held = item.cost.held(i)
            moved = sum(n for src, dst, n in item.cost.moved if channel in (src, dst))
            if held <= 0 or moved <= 0:
                continue
            start = item.start + item.cost.lead
            gbps = moved / (held * us.ns_per_cycle)  # bytes per ns
            steps[channel] += [(start, gbps), (start + held, 0.0)]
    events: list[Event] = []
    for channel, points in sorted(steps.items()):
        name = f"{channel} bandwidth (GB/s)"
        events += _counter(name, chip_pid, points, us)
    return events


def _dma_counters(items: Iterable[Scheduled], us: _Clock) -> list[Event]:
    """Per core, the DMA engine's transfers in flight."""
    deltas: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for item in items:
        if item.cost.unit == "dma" and item.end > item.start:
            deltas[item.core] += [(item.start, 1), (item.end, -1)]
    events: list[Event] = []
    for core, changes in sorted(deltas.items()):
        level, points = 0, []
        for cycle, step in sorted(changes, key=lambda c: (c[0], c[1])):  # ends before starts
            level += step
            points.append((cycle, float(level)))
        events += _counter("DMA transfers in flight", core, points, us)
    return events


def _counter(name: str, pid: int, points: list[tuple[int, float]], us: _Clock) -> list[Event]:
    """Counter events, one per distinct time (the last value at a time wins)."""
    last: dict[int, float] = {}
    for cycle, value in sorted(points, key=lambda p: (p[0], p[1] != 0.0)):
        last[cycle] = value
    return [
        {"name": name, "ph": "C", "pid": pid, "ts": us(cycle), "args": {"value": value}}
        for cycle, value in sorted(last.items())
    ]


# ---- metadata -----------------------------------------------------------------------------


def _metadata(tracks: list[tuple[int, int]], chip_pid: int, title: str) -> list[Event]:
    meta: list[Event] = []
    for core in sorted({c for c, _ in tracks}):
        meta.append(_name_event("process_name", core, 0, f"core {core}"))
        meta.append(
            {"name": "process_sort_index", "ph": "M", "pid": core, "args": {"sort_index": core}}
        )
    for core, tid in tracks:
        meta.append(_name_event("thread_name", core, tid, _track_name(tid)))
        meta.append(
            {"name": "thread_sort_index", "ph": "M", "pid": core, "tid": tid,
             "args": {"sort_index": tid}}
        )  # fmt: skip
    meta.append(_name_event("process_name", chip_pid, 0, f"chip channels {title}".strip()))
    for channel, tid in _CHANNEL_TRACKS.items():
        meta.append(_name_event("thread_name", chip_pid, tid, f"{channel} channel"))
    return meta


def _name_event(kind: str, pid: int, tid: int, name: str) -> Event:
    return {"name": kind, "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}}


def write_trace(path: str | Path, schedule: Schedule, arch: Arch, program_name: str = "") -> None:
    try:
        Path(path).write_text(json.dumps(chrome_trace(schedule, arch, program_name)))
    except OSError as e:
        raise CimcError(f"cannot write the trace: {e.strerror or e}", str(path)) from None
