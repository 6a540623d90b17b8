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
partial sums then cross phases (`split_columns` counts them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cimc.backend.bounds import min_duration
from cimc.backend.mapping import Placement, Slot, all_slots, place
from cimc.backend.target import Source, Target
from cimc.backend.tiling import Tile, pack, tile_workload
from cimc.backend.workload import MatmulLayer, Workload
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
    """One tile (one copy) in the constants image, in load order."""

    tile: Tile
    copy: int
    phase: int
    offset: int

    @property
    def nbytes(self) -> int:
        return self.tile.cells


@dataclass(frozen=True)
class StreamPlan:
    policy: Policy
    source: Source
    weight_bytes: int
    phases: tuple[Phase, ...]  # pinned phase (bank -1) first when present
    image: tuple[ImageEntry, ...]
    split_columns: int
    load_cycles: int  # all streamed (non-resident) loads of one steady-state inference
    exposed_load_cycles: int  # compute idle waiting for loads, steady state
    makespan_estimate: int  # steady state, weight loads and static compute only
    first_makespan_estimate: int  # first inference: resident weights loaded too

    @property
    def resident(self) -> tuple[Phase, ...]:
        return tuple(p for p in self.phases if p.bank == -1)

    @property
    def streamed(self) -> tuple[Phase, ...]:
        return tuple(p for p in self.phases if p.bank != -1)

    @property
    def bytes_first_inference(self) -> int:
        return sum(p.nbytes for p in self.phases)

    @property
    def bytes_per_inference(self) -> int:
        """Bytes loaded by each steady-state inference (decode: per token)."""
        return sum(p.nbytes for p in self.streamed)

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
) -> StreamPlan:
    """Phases, placements and image layout of `workload` on `target` under `policy`.

    `reserve_per_core` macros of every core (the highest indices) are left free for
    run-time operands (attention K^T and V tiles); `pin_fraction` of the rest is pinned
    under `pin-what-fits`; `auto` tries every policy (and several pin fractions).
    """
    if policy == "auto":
        return _best(workload, target, source, span, duplicate, reserve_per_core)
    if policy not in POLICIES:
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
    tiles = tile_workload(workload, target.rows, target.cols).tiles
    if len(pack(tiles, target.rows, target.cols, span)) <= len(slots):
        placement = place(tiles, target, slots, span=span, workload=workload, duplicate=duplicate)
        return _finish(workload, target, policy, source, [(-1, placement)], 0)
    banks = _banks(target, usable, policy, pin_fraction)
    groups, split = _split(tiles, target, span, banks)
    phases = [(bank, place(ts, target, banks[bank], span=span)) for bank, ts in groups]
    return _finish(workload, target, policy, source, phases, split)


def _best(
    workload: Workload,
    target: Target,
    source: Source,
    span: int | None,
    duplicate: bool,
    reserve_per_core: int,
) -> StreamPlan:
    """The fastest plan over policies and pin fractions; ties: fewer bytes per inference."""

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
        )

    m = target.macros_per_core - reserve_per_core
    plans = [plan("sequential")]
    if target.cores * m > 1:
        fractions = sorted({0.25, 0.5, 0.75, (m - 2) / m}) if m >= 4 else [0.5]
        plans += [plan("double-buffer")] + [plan("pin-what-fits", f) for f in fractions]
    return min(plans, key=lambda p: (p.makespan_estimate, p.bytes_per_inference))


def _banks(
    target: Target, usable: int, policy: Policy, pin_fraction: float
) -> dict[int, tuple[Slot, ...]]:
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
    tiles: Sequence[Tile], target: Target, span: int | None, banks: dict[int, tuple[Slot, ...]]
) -> tuple[list[tuple[int, list[Tile]]], int]:
    """Greedy phases over column blocks in program order; returns (bank, tiles) and splits."""
    stream_banks = [b for b in sorted(banks) if b >= 0]
    pinned_cap = len(banks.get(-1, ()))
    groups: list[tuple[int, list[Tile]]] = []
    current: list[Tile] = []
    bank = -1 if pinned_cap else stream_banks[0]
    split = 0
    for column in _columns(tiles):
        if _fits(current + column, target, span, len(banks[bank])):
            current += column
            continue
        if current:
            groups.append((bank, current))
            bank = _next_bank(bank, groups, stream_banks)
            current = []
        if _fits(column, target, span, len(banks[bank])):
            current = list(column)
            continue
        split += 1
        for tile in column:  # a column block larger than a bank: split its reduction
            if not _fits(current + [tile], target, span, len(banks[bank])):
                groups.append((bank, current))
                bank = _next_bank(bank, groups, stream_banks)
                current = []
            current.append(tile)
    if current:
        groups.append((bank, current))
    return groups, split


def _next_bank(bank: int, groups: list[tuple[int, list[Tile]]], stream_banks: list[int]) -> int:
    streamed = sum(1 for b, _ in groups if b >= 0)
    return stream_banks[streamed % len(stream_banks)]


def _columns(tiles: Sequence[Tile]) -> list[list[Tile]]:
    columns: dict[tuple[int, int], list[Tile]] = {}
    for tile in sorted(tiles, key=lambda t: t.key):
        columns.setdefault(tile.key[:2], []).append(tile)
    return list(columns.values())


def _fits(tiles: Sequence[Tile], target: Target, span: int | None, capacity: int) -> bool:
    full = sum(1 for t in tiles if t.rows == target.rows and t.cols == target.cols)
    if full > capacity:
        return False
    partial = [t for t in tiles if t.rows != target.rows or t.cols != target.cols]
    return full + len(pack(partial, target.rows, target.cols, span)) <= capacity


def _finish(
    workload: Workload,
    target: Target,
    policy: Policy,
    source: Source,
    groups: Sequence[tuple[int, Placement]],
    split: int,
) -> StreamPlan:
    computes = _phase_computes(workload, target, [placement for _, placement in groups])
    phases: list[Phase] = []
    image: list[ImageEntry] = []
    offset = 0
    for index, ((bank, placement), compute) in enumerate(zip(groups, computes, strict=True)):
        start = offset
        for pt in placement.tiles:
            image.append(ImageEntry(pt.tile, pt.copy, index, offset))
            offset += pt.tile.cells
        phases.append(Phase(index, bank, placement, start, offset - start, compute))
    transfers = [target.transfer_cycles(p.nbytes, source, len(p.placement.macros)) for p in phases]
    latency, sequential = target.latency_cycles(source), policy == "sequential"
    makespan, load_cycles = _timeline(phases, transfers, latency, sequential, cold=False)
    first_makespan, _ = _timeline(phases, transfers, latency, sequential, cold=True)
    busy = sum(p.compute_cycles for p in phases)
    return StreamPlan(
        policy=policy,
        source=source,
        weight_bytes=workload.weight_bytes,
        phases=tuple(phases),
        image=tuple(image),
        split_columns=split,
        load_cycles=load_cycles,
        exposed_load_cycles=makespan - busy,
        makespan_estimate=makespan,
        first_makespan_estimate=first_makespan,
    )


def _timeline(
    phases: Sequence[Phase], transfers: Sequence[int], latency: int, sequential: bool, cold: bool
) -> tuple[int, int]:
    """Steady-state (end time, load time): one DMA stream, one phase computing at a time.

    A phase's load may start once the previous load is done and its bank is free (the
    last phase that used the bank finished computing); sequential waits for all compute.
    The image is in load order, so a load that starts the moment the previous one ends
    continues the same contiguous read and pays no new latency; a restart pays it.
    `cold`: the first inference, which also loads the resident phases (image first).
    """
    load_end = compute_end = load_total = 0
    flowing = False
    bank_free: dict[int, int] = {}
    for phase, transfer in zip(phases, transfers, strict=True):
        if phase.bank == -1 and not cold:  # resident: loaded by an earlier inference
            compute_end += phase.compute_cycles
            continue
        ready = compute_end if sequential else bank_free.get(phase.bank, 0)
        start = max(load_end, ready)
        duration = transfer + (0 if flowing and start == load_end else latency)
        load_end, load_total, flowing = start + duration, load_total + duration, True
        compute_end = max(compute_end, load_end) + phase.compute_cycles
        bank_free[phase.bank] = compute_end
    return compute_end, load_total


def _phase_computes(
    workload: Workload, target: Target, placements: Sequence[Placement]
) -> list[int]:
    """Per phase: max(busiest macro, dependency chain) of the work it hosts."""
    macro_busy: list[dict[tuple[int, int], int]] = [{} for _ in placements]
    layer_time: list[dict[str, int]] = [{} for _ in placements]
    last_phase: dict[str, int] = {}
    for index, placement in enumerate(placements):
        for pm in placement.macros:
            for window in pm.image.windows:
                layer = window.tile.layer
                item = workload.item(layer)
                assert isinstance(item, MatmulLayer)
                cycles = target.mvm_cycles(
                    _share(item.vectors, placement.copies_of(layer), pm.copy)
                )
                slot = (pm.core, pm.macro)
                macro_busy[index][slot] = macro_busy[index].get(slot, 0) + cycles
                per_layer = layer_time[index]
                per_layer[layer] = max(per_layer.get(layer, 0), macro_busy[index][slot])
                last_phase[layer] = index
    chains = _chains(workload, target, layer_time, last_phase)
    return [
        max(max(busy.values(), default=0), chain)
        for busy, chain in zip(macro_busy, chains, strict=True)
    ]


def _chains(
    workload: Workload,
    target: Target,
    layer_time: Sequence[dict[str, int]],
    last_phase: dict[str, int],
) -> list[int]:
    """Longest dependency chain inside each phase; other work joins its latest phase."""
    finish: list[dict[str, int]] = [{} for _ in layer_time]
    phase = 0
    for item in workload.items:
        homes = [i for i, times in enumerate(layer_time) if item.name in times]
        if not isinstance(item, MatmulLayer):
            homes = [phase]
        for home in homes:
            start = max((finish[home].get(d, 0) for d in item.depends_on), default=0)
            duration = layer_time[home].get(item.name) or min_duration(item, target)
            finish[home][item.name] = start + duration
        phase = last_phase.get(item.name, phase)
    return [max(f.values(), default=0) for f in finish]


def _share(vectors: int, copies: int, copy: int) -> int:
    return vectors // copies + (1 if copy < vectors % copies else 0)


def compare_policies(
    workload: Workload, target: Target, source: Source = "dram"
) -> tuple[StreamPlan, ...]:
    """One plan per policy, for side-by-side reports."""
    return tuple(plan_streaming(workload, target, policy, source) for policy in POLICIES)
