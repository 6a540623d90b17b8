"""Area and static power of a chip, from its preset's `[area]` and `[leakage]` sections.

On chip: every core's macros, scratchpad, vector unit and mesh router, and the shared
global buffer; DRAM and flash are off chip and counted in neither. Leakage is drawn for the
whole makespan: `leakage energy (uJ) = total leakage (mW) * time (us) / 1000`.
"""

from __future__ import annotations

from cimc.machine.arch import Arch

MIB = 1 << 20
PARTS = ("macro_arrays", "sram", "vector_units", "routers")


def _counts(arch: Arch) -> dict[str, float]:
    """How many of each part's unit the chip holds (sram in MiB)."""
    cores = arch.chip.cores
    sram_bytes = cores * arch.core.scratchpad_bytes + arch.memory.gb_bytes
    return {
        "macro_arrays": cores * arch.core.macros,
        "sram": sram_bytes / MIB,
        "vector_units": cores * arch.core.vector_lanes,
        "routers": cores,
    }


def area_breakdown_mm2(arch: Arch) -> dict[str, float]:
    a, n = arch.area, _counts(arch)
    per = {
        "macro_arrays": a.macro_mm2,
        "sram": a.sram_mm2_per_mib,
        "vector_units": a.vector_lane_mm2,
        "routers": a.noc_router_mm2,
    }
    return {part: n[part] * per[part] for part in PARTS}


def leakage_breakdown_mw(arch: Arch) -> dict[str, float]:
    p, n = arch.leakage, _counts(arch)
    per = {
        "macro_arrays": p.macro_mw,
        "sram": p.sram_mw_per_mib,
        "vector_units": p.vector_lane_mw,
        "routers": p.noc_router_mw,
    }
    return {part: n[part] * per[part] for part in PARTS}


def chip_area_mm2(arch: Arch) -> float:
    return sum(area_breakdown_mm2(arch).values())


def leakage_mw(arch: Arch) -> float:
    return sum(leakage_breakdown_mw(arch).values())


def leakage_energy_uj(arch: Arch, cycles: int) -> float:
    """Static energy over `cycles` of the chip's clock: mW x us = nJ."""
    return leakage_mw(arch) * (cycles / arch.chip.clock_mhz) / 1000.0
