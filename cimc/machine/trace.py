"""Chrome / Perfetto trace of a schedule (JSON "traceEvents", open in ui.perfetto.dev).

One process per core with a track per unit (DMA engine, NoC port, vector unit, each macro,
sync), plus a "chip" process with the shared DRAM / flash / global-buffer channels. One
complete ("X") event per instruction; timestamps in microseconds at the arch's clock.
"""

from __future__ import annotations

import json
from pathlib import Path

from cimc.errors import CimcError
from cimc.machine.arch import Arch
from cimc.machine.interpreter import instr_text
from cimc.machine.schedule import Schedule

_FIXED_TRACKS = {"dma": 1, "noc": 2, "vector": 3, "sync": 4}
_CHANNEL_TRACKS = {"dram": 1, "flash": 2, "gb": 3}


def _track(unit: str) -> int:
    return _FIXED_TRACKS.get(unit) or 100 + int(unit.removeprefix("macro"))


def _track_name(unit: str) -> str:
    names = {"dma": "DMA engine", "noc": "NoC port", "vector": "vector unit", "sync": "sync"}
    return names.get(unit) or f"macro {unit.removeprefix('macro')}"


def chrome_trace(schedule: Schedule, arch: Arch, program_name: str = "") -> dict[str, object]:
    us = 1.0 / arch.chip.clock_mhz  # microseconds per cycle
    chip_pid = arch.chip.cores
    events: list[dict[str, object]] = []
    tracks: set[tuple[int, str]] = set()
    for item in schedule.items:
        unit = item.cost.unit
        tracks.add((item.core, unit))
        events.append(
            {
                "name": item.instr.opcode,
                "ph": "X",
                "pid": item.core,
                "tid": _track(unit),
                "ts": item.start * us,
                "dur": (item.end - item.start) * us,
                "args": {
                    "instr": instr_text(item.instr),
                    "line": item.instr.line,
                    "source": item.instr.comment or "",
                    "cycles": item.end - item.start,
                    "energy_pj": round(item.cost.energy.total, 3),
                },
            }
        )
        for i, channel in enumerate(item.cost.channels):
            start = item.start + item.cost.lead
            events.append(
                {
                    "name": f"{item.instr.opcode} (core {item.core})",
                    "ph": "X",
                    "pid": chip_pid,
                    "tid": _CHANNEL_TRACKS[channel],
                    "ts": start * us,
                    "dur": item.cost.held(i) * us,
                    "args": {"line": item.instr.line},
                }
            )
    meta = _metadata(sorted(tracks), chip_pid, program_name)
    return {"traceEvents": meta + events, "displayTimeUnit": "ns"}


def _metadata(tracks: list[tuple[int, str]], chip_pid: int, title: str) -> list[dict[str, object]]:
    meta: list[dict[str, object]] = []
    for core in sorted({c for c, _ in tracks}):
        meta.append(_name_event("process_name", core, 0, f"core {core}"))
        meta.append(
            {"name": "process_sort_index", "ph": "M", "pid": core, "args": {"sort_index": core}}
        )
    for core, unit in tracks:
        meta.append(_name_event("thread_name", core, _track(unit), _track_name(unit)))
        meta.append(
            {"name": "thread_sort_index", "ph": "M", "pid": core, "tid": _track(unit),
             "args": {"sort_index": _track(unit)}}
        )  # fmt: skip
    meta.append(_name_event("process_name", chip_pid, 0, f"chip channels {title}".strip()))
    for channel, tid in _CHANNEL_TRACKS.items():
        meta.append(_name_event("thread_name", chip_pid, tid, f"{channel} channel"))
    return meta


def _name_event(kind: str, pid: int, tid: int, name: str) -> dict[str, object]:
    return {"name": kind, "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}}


def write_trace(path: str | Path, schedule: Schedule, arch: Arch, program_name: str = "") -> None:
    try:
        Path(path).write_text(json.dumps(chrome_trace(schedule, arch, program_name)))
    except OSError as e:
        raise CimcError(f"cannot write the trace: {e.strerror or e}", str(path)) from None
