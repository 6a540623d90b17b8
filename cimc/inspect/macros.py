"""Per-macro view: which weight tile lives in each macro in each phase, and who used it.

A macro's phase runs from one of its `mload`s to the next (or to the end of the program).
A chip phase groups mloads in time order until a macro that already received a tile in the
current chip phase is reloaded: each chip phase is one "fill" of the macros.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cimc.errors import CimcError
from cimc.inspect.image import image_tiles
from cimc.inspect.tiles import TileSource, core_sources
from cimc.machine.arch import Arch
from cimc.machine.opcodes import spec_of
from cimc.machine.program import MacroRef, Program
from cimc.machine.schedule import Schedule, Scheduled


@dataclass(frozen=True)
class MacroUse:
    """An mvm that read the macro during the phase."""

    pc: int
    line: int
    start: int
    node: str
    window: tuple[int, int, int, int]  # r0, r1, c0, c1 of the cells it read
    opcode: str = "mvm"


@dataclass(frozen=True)
class MacroPhase:
    core: int
    macro: int
    index: int  # phase number of this macro, from 0
    start: int  # cycle the mload starts
    end: int  # cycle the next mload of this macro starts (or the makespan)
    window: tuple[int, int, int, int]  # r0, r1, c0, c1
    transposed: bool
    node: str
    line: int
    pc: int  # the mload's position in its core's stream
    source: TileSource
    cells: int  # cells in use: the loaded window and every window an mvm reads in the phase
    uses: tuple[MacroUse, ...]

    @property
    def packed(self) -> bool:
        """Do the cells hold int4 weight pairs (read by mvm.i4)? Then the phase holds two
        weights a cell."""
        return any(u.opcode.startswith("mvm.i4") for u in self.uses)

    @property
    def weights(self) -> int:
        """Weights the cells in use hold."""
        return self.cells * (2 if self.packed else 1)

    def as_dict(self) -> dict[str, object]:
        r0, r1, c0, c1 = self.window
        return {
            "core": self.core,
            "macro": self.macro,
            "phase": self.index,
            "start_cycle": self.start,
            "end_cycle": self.end,
            "window": f"[{r0}:{r1},{c0}:{c1}]",
            "transposed": self.transposed,
            "node": self.node,
            "line": self.line,
            "tile": self.source.label,
            "tile_kind": self.source.kind,
            "tile_via": self.source.via,
            "mvms": [{"line": u.line, "start_cycle": u.start, "node": u.node} for u in self.uses],
            "cells_in_use": self.cells,
            "weight_bits": 4 if self.packed else 8,
            "weights_held": self.weights,
        }


def parse_macro_spec(text: str, program: Program, arch: Arch) -> tuple[int, int]:
    """`CORE.MACRO` (e.g. `0.3` or `0.m3`) checked against the program and the arch."""
    core_text, dot, macro_text = text.partition(".")
    macro_text = macro_text.removeprefix("m")
    if not dot or not core_text.isdigit() or not macro_text.isdigit():
        raise CimcError(f"bad macro {text!r}; write CORE.MACRO, e.g. 0.3", "--macro")
    core, macro = int(core_text), int(macro_text)
    cores = sorted(s.core for s in program.cores)
    if core not in cores:
        raise CimcError(f"core {core} has no section; the program uses cores {cores}", "--macro")
    if macro >= arch.core.macros:
        raise CimcError(
            f"no macro {macro}: '{arch.name}' has macros 0..{arch.core.macros - 1}", "--macro"
        )
    return core, macro


def _ref(item: Scheduled) -> MacroRef | None:
    found = spec_of(item.instr).macro(item.instr)
    return None if found is None else found[0]


def macro_phases(program: Program, schedule: Schedule) -> tuple[MacroPhase, ...]:
    """Every phase of every macro, ordered by core, macro, then time."""
    ordered = sorted(schedule.items, key=lambda i: (i.core, i.pc))  # program order per core
    phases: list[MacroPhase] = []
    open_: dict[tuple[int, int], tuple[Scheduled, MacroRef, list[MacroUse]]] = {}
    for item in ordered:
        ref = _ref(item)
        if ref is None:
            continue
        key = (item.core, ref.index)
        if item.instr.opcode.startswith("mload"):
            if key in open_:
                phases.append(_close(open_[key], item.start))
            open_[key] = (item, ref, [])
        elif key in open_:
            node = item.instr.comment or ""
            window = (ref.r0, ref.r1, ref.c0, ref.c1)
            use = MacroUse(item.pc, item.instr.line, item.start, node, window, item.instr.opcode)
            open_[key][2].append(use)
    for state in open_.values():
        phases.append(_close(state, schedule.makespan))
    images = image_tiles(program)
    sources = {s.core: core_sources(program, s.core, images) for s in program.cores}
    numbered = [_replace(p, source=sources[p.core][p.pc]) for p in _number(phases)]
    return tuple(sorted(numbered, key=lambda p: (p.core, p.macro, p.start)))


def _cells(windows: list[tuple[int, int, int, int]]) -> int:
    mask = np.zeros((max(w[1] for w in windows), max(w[3] for w in windows)), dtype=bool)
    for r0, r1, c0, c1 in windows:
        mask[r0:r1, c0:c1] = True
    return int(mask.sum())


def _close(state: tuple[Scheduled, MacroRef, list[MacroUse]], end: int) -> MacroPhase:
    item, ref, uses = state
    windows = [(ref.r0, ref.r1, ref.c0, ref.c1), *(u.window for u in uses)]
    return MacroPhase(
        core=item.core,
        macro=ref.index,
        index=0,
        start=item.start,
        end=end,
        window=(ref.r0, ref.r1, ref.c0, ref.c1),
        transposed=item.instr.opcode == "mload.t",
        node=item.instr.comment or "",
        line=item.instr.line,
        pc=item.pc,
        source=TileSource("?"),  # resolved per core in one pass by macro_phases
        cells=_cells(windows),
        uses=tuple(uses),
    )


def _number(phases: list[MacroPhase]) -> list[MacroPhase]:
    counts: dict[tuple[int, int], int] = {}
    out = []
    for p in sorted(phases, key=lambda p: (p.core, p.macro, p.start)):
        n = counts.get((p.core, p.macro), 0)
        counts[(p.core, p.macro)] = n + 1
        out.append(_replace(p, index=n))
    return out


def _replace(p: MacroPhase, **changes: object) -> MacroPhase:
    return replace(p, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ChipPhase:
    """One fill of the chip's macros: the phases live when the fill completed."""

    index: int
    start: int
    end: int
    live: dict[tuple[int, int], MacroPhase]  # (core, macro) -> its phase


def chip_phases(phases: tuple[MacroPhase, ...], makespan: int) -> tuple[ChipPhase, ...]:
    """Group mloads in time order; a reload of a macro loaded in this group starts a new one."""
    live: dict[tuple[int, int], MacroPhase] = {}
    loaded: set[tuple[int, int]] = set()
    groups: list[tuple[int, dict[tuple[int, int], MacroPhase]]] = []
    start = 0
    for p in sorted(phases, key=lambda p: (p.start, p.core, p.macro)):
        key = (p.core, p.macro)
        if key in loaded:
            groups.append((start, dict(sorted(live.items()))))
            loaded, start = set(), p.start
        loaded.add(key)
        live[key] = p
    if not loaded:
        return ()  # no mload at all
    groups.append((start, dict(sorted(live.items()))))
    ends = [s for s, _ in groups[1:]] + [makespan]
    return tuple(
        ChipPhase(i, s, e, g) for i, ((s, g), e) in enumerate(zip(groups, ends, strict=True))
    )
