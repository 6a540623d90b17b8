"""Capacity-aware weight streaming: phases, macro banks, a load-ordered weight image.

Why this algorithm ("LLM in a flash" applied to CIM): when the weights exceed the macros,
the program runs as phases, each a contiguous run of output column blocks in program
order whose packed tiles fit the macros given to it. Program order makes every phase's
inputs available when it starts and loads each weight exactly once per inference. The
constants image is laid out in load order, so each phase is one contiguous read (large
chunks reach the flash/DRAM's sequential bandwidth). Policies:
- `sequential`: phases use every macro; load, compute, load, compute (nothing hidden).
- `double-buffer`: macros split into two banks; phase i+1 loads into the other bank while
  phase i computes. Smaller phases, same bytes, loads hidden behind compute.
  Halving the macros per phase halves the parallelism, so this wins only when loads and
  compute are comparable; `auto` plans every policy and keeps the fastest estimate.
- `pin-what-fits`: a prefix of the program stays resident across inferences (decode:
  across tokens) in a pinned bank; the rest streams double-buffered through two small
  banks. Steady-state bytes per inference drop by the pinned bytes.
When everything fits in the macros, every policy keeps all weights resident: they load
once (first inference) and nothing is loaded in steady state.
A column block bigger than a whole bank is split between reduction tiles; its int32
partial sums then cross phases (`split_columns` counts them). With `fill`, any column
that does not fit the current phase is split to fill it: fewer, fuller phases (fewer
read restarts and phase switches) for more partial sums carried across phases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cimc.backend.plan.mapping import MacroId, Placement, all_slots, place
from cimc.backend.plan.target import Source, Target
from cimc.backend.plan.tiling import Tile, TilingPlan, pack, tile_workload
from cimc.backend.plan.timing import phase_computes, timeline
from cimc.backend.plan.workload import Workload
from cimc.errors import CimcError

Policy = Literal["sequential", "double-buffer", "pin-what-fits", "auto"]
POLICIES: tuple[Policy, ...] = ("sequential", "double-buffer", "pin-what-fits")


@dataclass(frozen=True)
class Phase:
    """Tiles resident together; `bank` names the macro set (-1: pinned, resident)."""

    index: int
    bank: int
    placement: Placement
    offset: int  # byte offset of this phase's weights in the load-ordered image
    nbytes: int
    compute_cycles: int


@dataclass(frozen=True)
class ImageEntry:
    """One tile in the constants image, in load order: a tile appears once however many
    copies its phase holds (each copy reads the same bytes; `StreamPlan.copy_bytes`)."""

    tile: Tile
    phase: int
    offset: int

    @property
    def nbytes(self) -> int:
        return self.tile.cells


@dataclass(frozen=True)
class StreamPlan:
    """Phases in execution order, the load-ordered weight image and the time estimates."""

    policy: Policy
    source: Source
    weight_bytes: int
    phases: tuple[Phase, ...]  # pinned phase (bank -1) first when present
    image: tuple[ImageEntry, ...]
    load_cycles: int  # all streamed (non-resident) loads of one steady-state inference
    exposed_load_cycles: int  # compute idle waiting for loads, steady state
    makespan_estimate: int  # steady state: loads, MVMs, activation traffic, work chains
    first_makespan_estimate: int  # first inference: resident weights loaded too

    @property
    def resident(self) -> tuple[Phase, ...]:
        return tuple(p for p in self.phases if p.bank == -1)

    @property
    def streamed(self) -> tuple[Phase, ...]:
        return tuple(p for p in self.phases if p.bank != -1)

    @property
    def split_columns(self) -> int:
        """Output blocks whose reduction tiles sit in more than one phase."""
        return sum(1 for phases in self.column_phases().values() if len(phases) > 1)

    def column_phases(self) -> dict[tuple[str, int], tuple[int, ...]]:
        """Phases holding each (layer, output block), in image order; a block in more
        than one phase has its int32 partial sums carried across the phase boundary."""
        phases: dict[tuple[str, int], list[int]] = {}
        for entry in self.image:
            seen = phases.setdefault((entry.tile.layer, entry.tile.nb), [])
            if entry.phase not in seen:
                seen.append(entry.phase)
        return {key: tuple(value) for key, value in phases.items()}

    @property
    def copies(self) -> dict[str, int]:
        """Copies of every duplicated layer (cimc/backend/plan/duplication.py), layer order."""
        out: dict[str, int] = {}
        for phase in self.phases:
            out.update(phase.placement.duplicated)
        return out

    @property
    def bytes_first_inference(self) -> int:
        return sum(p.nbytes for p in self.phases)

    @property
    def bytes_per_inference(self) -> int:
        """Bytes loaded by each steady-state inference (decode: per token)."""
        return sum(p.nbytes for p in self.streamed)

    @property
    def macro_write_bytes(self) -> int:
        """Bytes written into macros by the first inference (duplicates included)."""
        return sum(pm.image.cells_used for p in self.phases for pm in p.placement.macros)

    @property
    def copy_bytes(self) -> int:
        """Bytes the duplicate copies read again from the image (first inference)."""
        return self.macro_write_bytes - sum(
            pm.image.cells_used for p in self.phases for pm in p.placement.macros if not pm.copy
        )

    @property
    def hidden_load_cycles(self) -> int:
        return self.load_cycles - self.exposed_load_cycles

    @property
    def utilization(self) -> float:
        """Weight cells used / cells of the macros allocated, over all phases."""
        macros = [pm for p in self.phases for pm in p.placement.macros]
        if not macros:
            return 1.0
        first = self.phases[0].placement
        return sum(pm.image.cells_used for pm in macros) / (len(macros) * first.rows * first.cols)


def plan_streaming(
    workload: Workload,
    target: Target,
    policy: Policy = "double-buffer",
    source: Source = "dram",
    *,
    span: int | None = None,
    duplicate: bool = False,
    pin_fraction: float = 0.5,
    reserve_per_core: int = 0,
    fill: bool = False,
    cold: bool = False,
    tiling: TilingPlan | None = None,
) -> StreamPlan:
    """Phases, placements and image layout of `workload` on `target` under `policy`.

    `reserve_per_core` macros of every core (the highest indices) are left free for
    run-time operands (attention K^T and V tiles); `pin_fraction` of the rest is pinned
    under `pin-what-fits`; `auto` tries every policy (and several pin fractions);
    `fill` splits columns to fill every phase (see the module doc); `cold`: `auto` ranks
    plans by the first inference (every weight loaded) instead of the steady state;
    `tiling`: the workload's tiles for the target's macros, when already made.
    """
    if policy not in (*POLICIES, "auto"):
        names = ", ".join((*POLICIES, "auto"))
        raise CimcError(f"unknown streaming policy {policy!r}; use one of {names}")
    usable = target.macros_per_core - reserve_per_core
    if not 1 <= usable <= target.macros_per_core:
        raise CimcError(
            f"reserve_per_core={reserve_per_core} leaves no weight macros "
            f"(a core has {target.macros_per_core})",
            "streaming options",
        )
    slots = tuple(s for s in all_slots(target) if s[1] < usable)
    tiling = tiling or tile_workload(workload, target.rows, target.cols)
    tiles = tiling.tiles
    if len(pack(tiles, target.rows, target.cols, span)) <= len(slots):  # all resident
        placement = place(tiles, target, slots, span=span, workload=workload, duplicate=duplicate)
        return _finish(workload, target, policy, source, [(-1, placement)])
    if policy == "auto":
        return _best(
            workload, target, source, span, duplicate, reserve_per_core, fill, cold, tiling
        )
    banks = _banks(target, usable, policy, pin_fraction)
    groups = _split(tiles, target, span, banks, fill)
    phases = [(bank, place(ts, target, banks[bank], span=span)) for bank, ts in groups]
    return _finish(workload, target, policy, source, phases)


def _best(
    workload: Workload,
    target: Target,
    source: Source,
    span: int | None,
    duplicate: bool,
    reserve_per_core: int,
    fill: bool,
    cold: bool = False,
    tiling: TilingPlan | None = None,
) -> StreamPlan:
    """The fastest plan over policies and pin fractions; ties: fewer bytes per inference.
    `cold` compares first inferences (a program that runs once), else steady states."""

    def plan(policy: Policy, fraction: float = 0.5) -> StreamPlan:
        return plan_streaming(
            workload,
            target,
            policy,
            source,
            span=span,
            duplicate=duplicate,
            pin_fraction=fraction,
            reserve_per_core=reserve_per_core,
            fill=fill,
            tiling=tiling,
        )

    m = target.macros_per_core - reserve_per_core
    plans = [plan("sequential")]
    if target.cores * m > 1 and cold:  # pinning only pays from the second inference on
        plans.append(plan("double-buffer"))
    elif target.cores * m > 1:
        fractions = sorted({0.25, 0.5, 0.75, (m - 2) / m}) if m >= 4 else [0.5]
        plans += [plan("double-buffer")] + [plan("pin-what-fits", f) for f in fractions]
    if cold:
        return min(plans, key=lambda p: (p.first_makespan_estimate, p.bytes_per_inference))
    return min(plans, key=lambda p: (p.makespan_estimate, p.bytes_per_inference))


def _banks(
    target: Target, usable: int, policy: Policy, pin_fraction: float
) -> dict[int, tuple[MacroId, ...]]:
    """Slots per bank among each core's first `usable` macros: 0, 1, and -1 pinned."""
    slots = tuple(s for s in all_slots(target) if s[1] < usable)
    if policy == "sequential":
        return {0: slots}
    if usable < 2 and target.cores < 2:
        raise CimcError(f"policy {policy} needs at least 2 macros", f"target {target.name}")
    if usable < 2:  # bank by cores
        half = target.cores // 2
        return {
            0: tuple(s for s in slots if s[0] < half),
            1: tuple(s for s in slots if s[0] >= half),
        }
    pinned = 0
    if policy == "pin-what-fits":
        if not 0.0 <= pin_fraction < 1.0:
            raise CimcError("pin_fraction must be in [0, 1)", "streaming options")
        pinned = min(usable - 2, math.floor(usable * pin_fraction))
    half = (usable - pinned) // 2
    bounds = {-1: (0, pinned), 0: (pinned, pinned + half), 1: (pinned + half, usable)}
    return {
        b: tuple(s for s in slots if lo <= s[1] < hi) for b, (lo, hi) in bounds.items() if hi > lo
    }


def _split(
    tiles: Sequence[Tile],
    target: Target,
    span: int | None,
    banks: dict[int, tuple[MacroId, ...]],
    fill: bool,
) -> list[tuple[int, list[Tile]]]:
    """Greedy phases over column blocks in program order, as (bank, tiles)."""
    phaser = _Phaser(target, span, banks)
    for column in _columns(tiles):
        if phaser.fits(column):
            phaser.add(column)
            continue
        if not fill:
            phaser.close()
            if phaser.fits(column):
                phaser.add(column)
                continue
        for tile in column:  # split the column's reduction over phases
            if not phaser.fits([tile]):
                phaser.close()
            phaser.add([tile])
    phaser.close()
    return phaser.groups


class _Phaser:
    """The phase being filled: its bank, full-tile count and partial tiles."""

    def __init__(self, target: Target, span: int | None, banks: dict[int, tuple[MacroId, ...]]):
        self.target, self.span, self.banks = target, span, banks
        self.stream_banks = [b for b in sorted(banks) if b >= 0]
        self.bank = -1 if -1 in banks else self.stream_banks[0]
        self.groups: list[tuple[int, list[Tile]]] = []
        self.tiles: list[Tile] = []
        self.full = 0
        self.partial: list[Tile] = []

    def _is_full(self, tile: Tile) -> bool:
        return tile.rows == self.target.rows and tile.cell_cols == self.target.cols

    def fits(self, extra: Sequence[Tile]) -> bool:
        capacity = len(self.banks[self.bank])
        full = self.full + sum(1 for t in extra if self._is_full(t))
        partial = self.partial + [t for t in extra if not self._is_full(t)]
        if full > capacity or not partial:
            return full <= capacity
        return full + len(pack(partial, self.target.rows, self.target.cols, self.span)) <= capacity

    def add(self, extra: Sequence[Tile]) -> None:
        self.tiles.extend(extra)
        self.full += sum(1 for t in extra if self._is_full(t))
        self.partial.extend(t for t in extra if not self._is_full(t))

    def close(self) -> None:
        """End the current phase (if any) and move to the next streaming bank."""
        if not self.tiles:
            return
        self.groups.append((self.bank, self.tiles))
        count = len(self.groups) - (1 if -1 in self.banks else 0)
        self.bank = self.stream_banks[count % len(self.stream_banks)]
        self.tiles, self.full, self.partial = [], 0, []


def _columns(tiles: Sequence[Tile]) -> list[list[Tile]]:
    columns: dict[tuple[int, int], list[Tile]] = {}
    for tile in sorted(tiles, key=lambda t: t.key):
        columns.setdefault(tile.key[:2], []).append(tile)
    return list(columns.values())


def resident_plan(
    workload: Workload, target: Target, placement: Placement, source: Source = "dram"
) -> StreamPlan:
    """The plan of a placement made elsewhere (plan/pipeline.py) holding every tile."""
    return _finish(workload, target, "sequential", source, [(-1, placement)])


def _finish(
    workload: Workload,
    target: Target,
    policy: Policy,
    source: Source,
    groups: Sequence[tuple[int, Placement]],
) -> StreamPlan:
    computes = phase_computes(workload, target, [placement for _, placement in groups])
    phases: list[Phase] = []
    image: list[ImageEntry] = []
    offset = 0
    for index, ((bank, placement), compute) in enumerate(zip(groups, computes, strict=True)):
        start = offset
        for pt in placement.tiles:
            if pt.copy == 0:
                image.append(ImageEntry(pt.tile, index, offset))
                offset += pt.tile.cells
        phases.append(Phase(index, bank, placement, start, offset - start, compute))
    transfers = [  # a duplicate copy reads its tiles from the image again
        target.transfer_cycles(p.nbytes + _copy_cells(p), source, len(p.placement.macros))
        for p in phases
    ]
    steps = [(p.bank, p.compute_cycles, t) for p, t in zip(phases, transfers, strict=True)]
    latency, sequential = target.latency_cycles(source), policy == "sequential"
    makespan, load_cycles = timeline(steps, latency, sequential, cold=False)
    first_makespan, _ = timeline(steps, latency, sequential, cold=True)
    busy = sum(p.compute_cycles for p in phases)
    return StreamPlan(
        policy=policy,
        source=source,
        weight_bytes=workload.weight_bytes,
        phases=tuple(phases),
        image=tuple(image),
        load_cycles=load_cycles,
        exposed_load_cycles=makespan - busy,
        makespan_estimate=makespan,
        first_makespan_estimate=first_makespan,
    )


def _copy_cells(phase: Phase) -> int:
    return sum(pm.image.cells_used for pm in phase.placement.macros if pm.copy)


def compare_policies(
    workload: Workload, target: Target, source: Source = "dram"
) -> tuple[StreamPlan, ...]:
    """One plan per policy, for side-by-side reports."""
    return tuple(plan_streaming(workload, target, policy, source) for policy in POLICIES)
