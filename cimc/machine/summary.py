"""The cost report of a program: makespan, lower bound, energy, utilization, traffic, layers.

`summarize(program, arch)` simulates the schedule and condenses it into a `CostSummary`,
which `cimc report` prints as tables or JSON. All figures come from the schedule and the
per-instruction costs (cimc/machine/cost.py, schedule.py); nothing is measured twice.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass

import numpy as np

from cimc.machine.arch import Arch
from cimc.machine.area import area_breakdown_mm2, leakage_breakdown_mw, leakage_energy_uj
from cimc.machine.cost import ENERGY_KINDS
from cimc.machine.dynamic import Dynamic
from cimc.machine.levels import LevelUse, memory_levels
from cimc.machine.opcodes import spec_of
from cimc.machine.program import Program
from cimc.machine.schedule import Schedule, simulate, total_energy

OFFCHIP = ("dram", "flash")


@dataclass(frozen=True)
class UnitUse:
    name: str  # "core0.dma", "core1.macro3", "chip.dram"
    busy_cycles: int
    utilization: float


@dataclass(frozen=True)
class LayerCost:
    """Instructions grouped by their source-location comment (the graph node)."""

    name: str
    instructions: int
    macs: int
    offchip_bytes: int
    energy_uj: float
    arithmetic_intensity: float  # ops (2 per MAC) per off-chip byte; inf if none moved


@dataclass(frozen=True)
class CostSummary:
    program: str
    arch: str
    cores: int
    clock_mhz: float
    makespan_cycles: int
    time_us: float
    lower_bound_cycles: int
    lower_bound_reason: str
    schedule_quality: float  # makespan / lower bound (1.0 is optimal)
    energy_breakdown_uj: dict[str, float]  # by kind (cimc.machine.cost.ENERGY_KINDS), leakage
    energy_uj: float  # total: dynamic + leakage
    dynamic_energy_uj: float  # the per-instruction energies
    leakage_energy_uj: float  # leakage_mw over the makespan
    leakage_mw: float  # static power of the chip (cimc/machine/area.py)
    leakage_breakdown_mw: dict[str, float]  # macro_arrays, sram, vector_units, routers
    area_mm2: float  # on-chip area (DRAM and flash excluded)
    area_breakdown_mm2: dict[str, float]  # macro_arrays, sram, vector_units, routers
    macs: int
    tops: float  # effective: 2 * MACs / time
    units: tuple[UnitUse, ...]
    opcode_counts: dict[str, int]
    bytes_moved: dict[str, int]  # "dram->sp": bytes
    macros_used: int
    macro_cell_utilization: float  # written cells / cells of the macros used
    layers: tuple[LayerCost, ...]
    memory_levels: tuple[LevelUse, ...]  # flash, dram, gb: bytes, footprint, bound

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def summarize(
    program: Program,
    arch: Arch,
    schedule: Schedule | None = None,
    dynamic: Dynamic | None = None,
) -> CostSummary:
    """The figures of one run: `dynamic` is that run's record of data-dependent loads
    (cimc/machine/dynamic.py; None: priced as if every row were named)."""
    schedule = schedule or simulate(program, arch, dynamic=dynamic)
    makespan = schedule.makespan
    units = _unit_use(schedule, makespan, max(1, arch.core.dma_channels))
    critical = simulate(program, arch, relaxed=True, dynamic=dynamic).makespan
    bound, reason = _lower_bound(program, units, critical, arch)
    energy = total_energy(schedule).as_dict()
    dynamic_uj = sum(energy.values()) / 1e6
    leakage_uj = leakage_energy_uj(arch, makespan)
    leakage = leakage_breakdown_mw(arch)
    area = area_breakdown_mm2(arch)
    macs = sum(item.cost.macs for item in schedule.items)
    time_us = makespan / arch.chip.clock_mhz
    used, cell_util = _macro_cells(schedule, arch)
    return CostSummary(
        program=program.source_name,
        arch=arch.name,
        cores=len(program.cores),
        clock_mhz=arch.chip.clock_mhz,
        makespan_cycles=makespan,
        time_us=time_us,
        lower_bound_cycles=bound,
        lower_bound_reason=reason,
        schedule_quality=makespan / bound if bound else 1.0,
        energy_breakdown_uj={**{k: energy[k] / 1e6 for k in ENERGY_KINDS}, "leakage": leakage_uj},
        energy_uj=dynamic_uj + leakage_uj,
        dynamic_energy_uj=dynamic_uj,
        leakage_energy_uj=leakage_uj,
        leakage_mw=sum(leakage.values()),
        leakage_breakdown_mw=leakage,
        area_mm2=sum(area.values()),
        area_breakdown_mm2=area,
        macs=macs,
        tops=2 * macs / (time_us * 1e6) if time_us else 0.0,
        units=units,
        opcode_counts=dict(sorted(Counter(i.instr.opcode for i in schedule.items).items())),
        bytes_moved=_bytes_moved(schedule),
        macros_used=used,
        macro_cell_utilization=cell_util,
        layers=_layers(schedule),
        memory_levels=memory_levels(program, arch, schedule),
    )


def _unit_use(schedule: Schedule, makespan: int, dma_channels: int) -> tuple[UnitUse, ...]:
    """Busy cycles per unit; the DMA engine's utilization is over its channels' cycles."""
    busy: dict[tuple[int, str], int] = defaultdict(int)
    for item in schedule.items:
        if item.cost.unit != "sync":
            busy[(item.core, item.cost.unit)] += item.cost.cycles

    def share(unit: str, cycles: int) -> float:
        span = makespan * (dma_channels if unit == "dma" else 1)
        return cycles / span if span else 0.0

    rows = [
        UnitUse(f"core{core}.{unit}", cycles, share(unit, cycles))
        for (core, unit), cycles in sorted(
            busy.items(), key=lambda kv: (kv[0][0], _unit_order(kv[0][1]))
        )
    ]
    rows += [
        UnitUse(f"chip.{name}", cycles, cycles / makespan if makespan else 0.0)
        for name, cycles in schedule.channel_busy.items()
    ]
    return tuple(rows)


def _unit_order(unit: str) -> tuple[int, int]:
    fixed = {"dma": 0, "noc": 1, "vector": 2}
    if unit in fixed:
        return (fixed[unit], 0)
    return (3, int(unit.removeprefix("macro")))


def _lower_bound(
    program: Program, units: tuple[UnitUse, ...], critical: int, arch: Arch
) -> tuple[int, str]:
    """No schedule beats the busiest unit or channel, nor the dependence critical path (in
    order issue, address dependences and synchronisation without contention). A DMA engine
    runs `core.dma_channels` transfers at once: its busy time over that many."""
    channels = max(1, arch.core.dma_channels)
    candidates = [
        (-(-u.busy_cycles // channels) if u.name.endswith(".dma") else u.busy_cycles,
         f"{u.name} busy")
        for u in units
    ]  # fmt: skip
    candidates.append((critical, "critical path"))
    return max(candidates, default=(0, "empty program"))


def _macro_cells(schedule: Schedule, arch: Arch) -> tuple[int, float]:
    written: dict[tuple[int, int], np.ndarray] = {}
    for item in schedule.items:
        if item.instr.opcode.startswith("mload"):
            found = spec_of(item.instr).macro(item.instr)
            assert found is not None
            ref = found[0]
            cells = written.setdefault(
                (item.core, ref.index), np.zeros((arch.macro.rows, arch.macro.cols), bool)
            )
            cells[ref.r0 : ref.r1, ref.c0 : ref.c1] = True
    if not written:
        return 0, 0.0
    total = sum(int(c.sum()) for c in written.values())
    return len(written), total / (len(written) * arch.macro_bytes)


def _bytes_moved(schedule: Schedule) -> dict[str, int]:
    moved: Counter[str] = Counter()
    for item in schedule.items:
        for src, dst, nbytes in item.cost.moved:
            moved[f"{src}->{dst}"] += nbytes
    return dict(sorted(moved.items()))


def _layers(schedule: Schedule) -> tuple[LayerCost, ...]:
    groups: dict[str, list] = defaultdict(list)
    for item in schedule.items:
        if item.instr.opcode not in ("halt", "barrier"):
            groups[item.instr.comment or "(no source location)"].append(item)
    rows = []
    for name in sorted(groups):
        items = groups[name]
        macs = sum(i.cost.macs for i in items)
        offchip = sum(n for i in items for s, d, n in i.cost.moved if s in OFFCHIP or d in OFFCHIP)
        energy = sum(i.cost.energy.total for i in items) / 1e6
        intensity = 2 * macs / offchip if offchip else float("inf")
        rows.append(LayerCost(name, len(items), macs, offchip, energy, intensity))
    return tuple(rows)
