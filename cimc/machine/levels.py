"""Per memory level (flash, DRAM, global buffer): bytes moved, bytes placed, bandwidth bound.

The figures a model larger than memory is judged by (isa/SPEC.md, "Memory hierarchy"):
how many bytes a run reads from each level, how much of each level the program occupies
(its declarations: constants, inputs, outputs, caches, pools; they are placed for the
whole run, so the highest declared byte is the peak) against the level's capacity, and the
least time the level's channel needs for the run's traffic (bytes / bandwidth). A run
within a few percent of its flash bound is as fast as its flash bytes allow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cimc.machine.arch import Arch
from cimc.machine.program import Program
from cimc.machine.schedule import Schedule

LEVELS = ("flash", "dram", "gb")


@dataclass(frozen=True)
class LevelUse:
    level: str
    read_bytes: int  # by one run
    written_bytes: int
    footprint_bytes: int  # the end of the highest declaration in the level
    capacity_bytes: int
    bytes_per_cycle: float
    bound_cycles: int  # (read + written bytes) / bandwidth: the channel's least busy time

    @property
    def fits(self) -> bool:
        return self.footprint_bytes <= self.capacity_bytes


def bandwidth(arch: Arch, level: str) -> float:
    """Bytes per cycle of a level's channel."""
    if level == "flash":
        return arch.flash_bytes_per_cycle
    if level == "dram":
        return arch.dram_bytes_per_cycle
    return arch.memory.gb_bits_per_cycle / 8


def footprint(program: Program, level: str) -> int:
    """Bytes of `level` up to the end of its highest declaration."""
    return max((d.end for d in program.decls if d.space == level), default=0)


def memory_levels(program: Program, arch: Arch, schedule: Schedule) -> tuple[LevelUse, ...]:
    read = dict.fromkeys(LEVELS, 0)
    written = dict.fromkeys(LEVELS, 0)
    for item in schedule.items:
        for src, dst, nbytes in item.cost.moved:
            if src in read:
                read[src] += nbytes
            if dst in written:
                written[dst] += nbytes
    out = []
    for level in LEVELS:
        bpc = bandwidth(arch, level)
        out.append(
            LevelUse(
                level=level,
                read_bytes=read[level],
                written_bytes=written[level],
                footprint_bytes=footprint(program, level),
                capacity_bytes=arch.space_bytes(level),
                bytes_per_cycle=bpc,
                bound_cycles=math.ceil((read[level] + written[level]) / bpc),
            )
        )
    return tuple(out)
