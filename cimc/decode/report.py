"""Per-token cost of a program: time, energy, bytes, load hiding and the roofline.

Everything comes from the schedule simulation of the program (cimc/machine/schedule.py):
- weight bytes loaded: bytes written into macros from constants (cimc.verify);
- off-chip bytes: everything read from or written to dram/flash;
- load time hidden behind compute: the cycles during which some dram/flash transfer runs
  while some macro or vector unit computes (interval union / intersection);
- roofline: ops (2 per MAC) per off-chip byte against the preset's ridge point
  (peak ops per cycle of every macro / dram bytes per cycle);
- streaming lower bound: the model's int8 weight bytes / dram bandwidth, the time a token
  takes at least when no weight stays on chip between tokens;
- memory levels (cimc/machine/levels.py): bytes read from flash and from DRAM by one run,
  the DRAM footprint (what the program places in DRAM, at most `memory.dram_bytes`) and
  the flash bound: the run's flash bytes / flash bandwidth, the least time a token takes
  when its weights stream from flash (the memory plan, cimc/backend/plan/memory.py).
A decode program is the same every step (positions are run-time data), so its figures
are the per-token cost of every decode step; with weights kept in the macros
(cimc/decode/warm.py) the first decode step runs the cold program, the others the warm one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from cimc.backend.builder.compiled import Compiled
from cimc.backend.plan.roofline import Roofline
from cimc.backend.plan.workload import packed_cols
from cimc.ir.graph import Graph
from cimc.machine.arch import Arch
from cimc.machine.area import leakage_energy_uj
from cimc.machine.dynamic import Dynamic
from cimc.machine.levels import memory_levels
from cimc.machine.program import Program
from cimc.machine.schedule import Schedule, simulate, total_energy
from cimc.quant.dialect import QLinear
from cimc.verify import weight_bytes_loaded

OFFCHIP = ("dram", "flash")
Interval = tuple[int, int]


@dataclass(frozen=True)
class TokenCost:
    program: str
    arch: str
    rows: int  # tokens computed by one run (the prompts' for prefill, B for a decode step)
    cycles: int
    time_us: float
    energy_uj: float
    energy_breakdown_uj: dict[str, float]
    macs: int
    weight_bytes: int  # int8 weights of the model's linear layers
    weight_bytes_loaded: int  # written into macros from constants by one run
    offchip_bytes: int
    load_cycles: int  # cycles with a dram/flash transfer in flight
    hidden_load_cycles: int  # ... while a macro or the vector unit computes
    peak_ops_per_cycle: float
    dram_bytes_per_cycle: float
    streaming_bound_cycles: int  # weight_bytes / dram bandwidth
    flash_bytes: int  # read from flash by one run
    dram_bytes: int  # read from DRAM by one run
    dram_footprint_bytes: int  # placed in DRAM by the program (<= dram_capacity_bytes)
    dram_capacity_bytes: int  # memory.dram_bytes
    flash_bound_cycles: int  # flash_bytes / flash bandwidth

    @property
    def weight_bytes_per_token(self) -> float:
        """Weight bytes loaded by one run over the tokens it computes (a batch of B decode
        rows shares each load: 1/B of the single-sequence figure at best)."""
        return self.weight_bytes_loaded / self.rows

    @property
    def tokens_per_second(self) -> float:
        """Tokens computed per second at the preset's clock, runs back to back."""
        return self.rows * 1e6 / self.time_us if self.time_us else 0.0

    @property
    def energy_per_token_uj(self) -> float:
        return self.energy_uj / self.rows

    @property
    def offchip_bytes_per_token(self) -> float:
        return self.offchip_bytes / self.rows

    @property
    def flash_bound_ratio(self) -> float:
        """Achieved time over the flash bound (1.0 = as fast as the flash bytes allow)."""
        return self.cycles / self.flash_bound_cycles if self.flash_bound_cycles else 0.0

    @property
    def roofline(self) -> Roofline:
        """The run on the preset's roofline: 2 ops per MAC over its off-chip bytes."""
        peak, bandwidth = self.peak_ops_per_cycle, self.dram_bytes_per_cycle
        return Roofline(2 * self.macs, self.offchip_bytes, peak, bandwidth)

    @property
    def ops_per_byte(self) -> float:
        return self.roofline.ops_per_byte

    @property
    def ridge_ops_per_byte(self) -> float:
        return self.roofline.ridge_ops_per_byte

    @property
    def memory_bound(self) -> bool:
        return self.roofline.memory_bound

    @property
    def attainable_ops_per_cycle(self) -> float:
        return self.roofline.attainable_ops_per_cycle

    @property
    def achieved_ops_per_cycle(self) -> float:
        return 2 * self.macs / self.cycles if self.cycles else 0.0

    @property
    def bound_ratio(self) -> float:
        """Achieved per-token time over the streaming lower bound (1.0 = at the bound)."""
        return self.cycles / self.streaming_bound_cycles if self.streaming_bound_cycles else 0.0

    @property
    def loaded_bound_cycles(self) -> int:
        """The weight bytes this run actually loads / bandwidth (below the streaming bound
        when weights stay in the macros between tokens)."""
        return math.ceil(self.weight_bytes_loaded / self.dram_bytes_per_cycle)

    def as_json(self) -> dict[str, Any]:
        props = (
            "ops_per_byte",
            "ridge_ops_per_byte",
            "memory_bound",
            "attainable_ops_per_cycle",
            "achieved_ops_per_cycle",
            "bound_ratio",
            "loaded_bound_cycles",
            "flash_bound_ratio",
            "weight_bytes_per_token",
            "tokens_per_second",
            "energy_per_token_uj",
            "offchip_bytes_per_token",
        )
        fields = asdict(self)
        fields["makespan_cycles"] = fields.pop("cycles")  # the JSON vocabulary's name
        return {**fields, **{p: _finite(getattr(self, p)) for p in props}}


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and math.isinf(value) else value


def model_weight_bytes(graph: Graph) -> int:
    """Weight bytes of the linear layers, int4 codes packed two a byte (what streams per
    token when nothing stays)."""
    total = 0
    for node in graph.nodes():
        if isinstance(node.op, QLinear):
            k, n = node.op.plan.weight.shape
            total += int(k) * packed_cols(int(n), node.op.plan.weight_bits)
    return total


def peak_ops_per_cycle(arch: Arch) -> float:
    macros = arch.chip.cores * arch.core.macros
    return macros * arch.macro.rows * arch.macro.cols * 2 / arch.mvm_cycles_per_vector


def token_cost(
    compiled: Compiled,
    name: str,
    rows: int,
    program: Program | None = None,
    dynamic: Dynamic | None = None,
) -> TokenCost:
    """The cost of one run of `program` (default: the compiled one); `dynamic` is that
    run's record of data-dependent loads (sparse layers: the rows it loaded), without
    which they are priced as if every row loaded."""
    arch, program = compiled.arch, program or compiled.program
    schedule = simulate(program, arch, dynamic=dynamic)
    leakage_pj = leakage_energy_uj(arch, schedule.makespan) * 1e6
    energy = {**total_energy(schedule).as_dict(), "leakage": leakage_pj}  # pJ
    loads, hidden = load_overlap(schedule)
    offchip = sum(
        n for item in schedule.items for s, d, n in item.cost.moved if s in OFFCHIP or d in OFFCHIP
    )
    weights = model_weight_bytes(compiled.graph)
    bandwidth = arch.dram_bytes_per_cycle
    levels = {m.level: m for m in memory_levels(program, arch, schedule)}
    return TokenCost(
        program=name,
        arch=arch.name,
        rows=rows,
        cycles=schedule.makespan,
        time_us=schedule.makespan / arch.chip.clock_mhz,
        energy_uj=sum(energy.values()) / 1e6,
        energy_breakdown_uj={k: v / 1e6 for k, v in energy.items()},
        macs=sum(item.cost.macs for item in schedule.items),
        weight_bytes=weights,
        weight_bytes_loaded=weight_bytes_loaded(program, dynamic),
        offchip_bytes=offchip,
        load_cycles=loads,
        hidden_load_cycles=hidden,
        peak_ops_per_cycle=peak_ops_per_cycle(arch),
        dram_bytes_per_cycle=bandwidth,
        streaming_bound_cycles=math.ceil(weights / bandwidth),
        flash_bytes=levels["flash"].read_bytes,
        dram_bytes=levels["dram"].read_bytes,
        dram_footprint_bytes=levels["dram"].footprint_bytes,
        dram_capacity_bytes=levels["dram"].capacity_bytes,
        flash_bound_cycles=math.ceil(levels["flash"].read_bytes / arch.flash_bytes_per_cycle),
    )


def load_overlap(schedule: Schedule) -> tuple[int, int]:
    """(cycles with an off-chip transfer in flight, of which some unit computes too)."""
    loads = _union((i.start, i.end) for i in schedule.items if set(i.cost.channels) & set(OFFCHIP))
    compute = _union(
        (i.start, i.end)
        for i in schedule.items
        if i.cost.unit == "vector" or i.cost.unit.startswith("macro")
    )
    return _length(loads), _length(_intersect(loads, compute))


def _union(intervals: Iterable[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for a, z in sorted(intervals):
        if z <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], z))
        else:
            out.append((a, z))
    return out


def _intersect(xs: list[Interval], ys: list[Interval]) -> list[Interval]:
    out, i, j = [], 0, 0
    while i < len(xs) and j < len(ys):
        a, z = max(xs[i][0], ys[j][0]), min(xs[i][1], ys[j][1])
        if a < z:
            out.append((a, z))
        if xs[i][1] < ys[j][1]:
            i += 1
        else:
            j += 1
    return out


def _length(intervals: list[Interval]) -> int:
    return sum(z - a for a, z in intervals)
