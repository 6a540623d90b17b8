"""The numbers of an arch preset that the planning passes need, flattened.

Why a separate record: the planner must not depend on how `cimc.machine.arch.Arch` nests
its sections, and tests can build odd machines (one core, one macro) directly. `Target`
is the only place that reads an `Arch`; everything below works on these integers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from cimc.errors import CimcError

Source = Literal["dram", "flash"]


@dataclass(frozen=True)
class Target:
    """Flat machine description used by tiling, mapping, streaming and bounds."""

    name: str
    cores: int
    mesh: tuple[int, int]
    macros_per_core: int
    rows: int
    cols: int
    input_bits: int = 8
    bits_per_cycle: int = 1
    mvm_pipeline_cycles: int = 4
    write_bits_per_cycle: int = 1024
    clock_mhz: float = 800.0
    noc_bits_per_cycle: int = 256
    gb_bits_per_cycle: int = 1024
    vector_lanes: int = 64
    vector_pipeline_cycles: int = 2
    dram_gbps: float = 6.4
    dram_latency_cycles: int = 100
    flash_gbps: float = 6.0
    flash_latency_cycles: int = 100
    flash_chunk_bytes: int = 32768

    def __post_init__(self) -> None:
        for field_name in ("cores", "macros_per_core", "rows", "cols", "input_bits"):
            if getattr(self, field_name) <= 0:
                raise CimcError(f"{field_name} must be positive", f"target {self.name}")
        if self.mesh[0] * self.mesh[1] != self.cores:
            raise CimcError("mesh product must equal cores", f"target {self.name}")

    @property
    def total_macros(self) -> int:
        return self.cores * self.macros_per_core

    @property
    def macro_cells(self) -> int:
        return self.rows * self.cols

    @property
    def cycles_per_vector(self) -> int:
        """Cycles one input vector occupies a macro (bit-serial inputs)."""
        return math.ceil(self.input_bits / self.bits_per_cycle)

    def mvm_cycles(self, vectors: int) -> int:
        """Cycles of one `mvm` over `vectors` input vectors on one macro window."""
        return vectors * self.cycles_per_vector + self.mvm_pipeline_cycles

    def source_bytes_per_cycle(self, source: Source) -> float:
        """Sustained bytes per cycle of the DRAM or flash channel (GB/s at the clock)."""
        gbps = self.dram_gbps if source == "dram" else self.flash_gbps
        return gbps * 1000.0 / self.clock_mhz

    def load_bytes_per_cycle(self, source: Source, macros: int) -> float:
        """Bytes per cycle a weight load reaches: min of channel, NoC links and macro writes."""
        noc = self.cores * self.noc_bits_per_cycle / 8
        write = max(1, macros) * self.write_bits_per_cycle / 8
        return min(self.source_bytes_per_cycle(source), noc, write)

    def latency_cycles(self, source: Source) -> int:
        """First-byte latency of a read that (re)starts a stream from DRAM or flash."""
        return self.dram_latency_cycles if source == "dram" else self.flash_latency_cycles

    def transfer_cycles(self, nbytes: int, source: Source, macros: int) -> int:
        """Cycles to stream `nbytes` into `macros` macros once the read is flowing."""
        return math.ceil(nbytes / self.load_bytes_per_cycle(source, macros))

    def load_cycles(self, nbytes: int, source: Source, macros: int) -> int:
        """Cycles of one contiguous read of `nbytes` into `macros` macros, latency included."""
        if nbytes == 0:
            return 0
        return self.latency_cycles(source) + self.transfer_cycles(nbytes, source, macros)

    def hops(self, core_a: int, core_b: int) -> int:
        """Manhattan distance on the mesh (core id = y * X + x)."""
        x_dim = self.mesh[0]
        return abs(core_a % x_dim - core_b % x_dim) + abs(core_a // x_dim - core_b // x_dim)

    def snake_order(self) -> tuple[int, ...]:
        """Cores in boustrophedon order: consecutive entries are mesh neighbours."""
        x_dim, y_dim = self.mesh
        order: list[int] = []
        for y in range(y_dim):
            xs = range(x_dim) if y % 2 == 0 else range(x_dim - 1, -1, -1)
            order.extend(y * x_dim + x for x in xs)
        return tuple(order)

    @staticmethod
    def from_arch(arch: Any) -> Target:
        """Flatten a `cimc.machine.arch.Arch` (sections chip/core/macro/memory)."""
        chip, core, macro, mem = arch.chip, arch.core, arch.macro, arch.memory
        return Target(
            name=arch.name,
            cores=chip.cores,
            mesh=(int(chip.mesh[0]), int(chip.mesh[1])),
            macros_per_core=core.macros,
            rows=macro.rows,
            cols=macro.cols,
            input_bits=macro.input_bits,
            bits_per_cycle=macro.bits_per_cycle,
            mvm_pipeline_cycles=macro.pipeline_cycles,
            write_bits_per_cycle=macro.write_bits_per_cycle,
            clock_mhz=float(chip.clock_mhz),
            noc_bits_per_cycle=chip.noc_bits_per_cycle,
            gb_bits_per_cycle=mem.gb_bits_per_cycle,
            vector_lanes=core.vector_lanes,
            vector_pipeline_cycles=core.vector_pipeline_cycles,
            dram_gbps=float(mem.dram_gbps),
            dram_latency_cycles=mem.dram_latency_cycles,
            flash_gbps=float(mem.flash_gbps),
            flash_latency_cycles=mem.flash_latency_cycles,
            flash_chunk_bytes=mem.flash_chunk_bytes,
        )


def load_target(name: str) -> Target:
    """The `Target` of preset `name` (or a TOML path) via `cimc.machine.arch.load_arch`."""
    from cimc.machine.arch import load_arch

    return Target.from_arch(load_arch(name))
