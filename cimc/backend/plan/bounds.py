"""Lower bound on the makespan of a workload on a target, and per-item minimal durations.

Why these three terms: no schedule can beat (1) the work of the busiest resource class
spread perfectly over its units, (2) the bytes that must cross the DRAM/flash channel at
its sustained bandwidth, or (3) the longest dependency chain run with each item at its
fastest. The bound is their maximum; schedule quality is makespan / bound.

- Compute: macro cycles (every minimal tile runs one `mvm` over all the layer's vectors,
  plus the macro write time of every byte that must be loaded) over all macros, and
  vector-unit cycles over the cores. Dynamic matmuls may run on either; the split that
  minimises the larger of the two is found exactly (fractional, greedy by cost ratio).
- Load: cold (first inference) every weight byte is loaded; warm (weights that fit stay
  resident from the previous inference) at least the bytes beyond the macro capacity.
- Critical path: longest chain of per-item minimal durations; cold, a static layer cannot
  finish before its own weight bytes have arrived and one MVM has run over the last.
  An item's outputs count as ready when the whole item is done (a schedule of whole-item
  instructions, as emission produces); a schedule that pipelined single rows through
  consecutive layers could beat this term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cimc.backend.plan.target import Source, Target
from cimc.backend.plan.workload import DynamicMatmul, MatmulLayer, VectorWork, WorkItem, Workload


@dataclass(frozen=True)
class LowerBound:
    compute_cycles: int
    load_cycles: int
    critical_path_cycles: int
    bytes_to_load: int

    @property
    def cycles(self) -> int:
        return max(self.compute_cycles, self.load_cycles, self.critical_path_cycles)

    @property
    def binding(self) -> str:
        """Which term sets the bound: 'compute', 'load' or 'critical-path'."""
        terms = {
            "compute": self.compute_cycles,
            "load": self.load_cycles,
            "critical-path": self.critical_path_cycles,
        }
        return max(terms, key=lambda name: terms[name])


def lower_bound(
    workload: Workload, target: Target, source: Source = "dram", warm: bool = False
) -> LowerBound:
    """max(compute-bound, load-bound, critical path) in cycles; see the module doc."""
    capacity = target.total_macros * target.macro_cells
    to_load = max(0, workload.weight_bytes - capacity) if warm else workload.weight_bytes
    load = math.ceil(to_load / target.source_bytes_per_cycle(source))
    return LowerBound(
        compute_cycles=_compute_bound(workload, target, to_load),
        load_cycles=load,
        critical_path_cycles=_critical_path(workload, target, source, warm),
        bytes_to_load=to_load,
    )


def tiles_of(k: int, n: int, target: Target, bits: int = 8) -> int:
    """Minimal number of R x C tiles of a [k x n] operand (int4: 2C weight columns)."""
    return math.ceil(k / target.rows) * math.ceil(n / (target.cols * (8 // bits)))


def write_cycles(nbytes: int, target: Target) -> float:
    """Macro cycles to write `nbytes` of int8 weights (one macro's write port)."""
    return nbytes * 8 / target.write_bits_per_cycle


def vector_cycles(item: VectorWork | DynamicMatmul) -> int:
    """Element operations of an item run on vector units (one op per lane per cycle)."""
    if isinstance(item, DynamicMatmul):
        return item.macs
    return item.elements * item.ops_per_element


def dynamic_macro_cycles(item: DynamicMatmul, target: Target) -> float:
    """Macro cycles of a dynamic matmul lowered onto macros: operand writes plus MVMs."""
    tiles = item.count * tiles_of(item.k, item.n, target)
    return tiles * target.mvm_cycles(item.vectors) + write_cycles(item.operand_bytes, target)


def _compute_bound(workload: Workload, target: Target, loaded_bytes: int) -> int:
    macro_work = write_cycles(loaded_bytes, target)
    vector_work = 0.0
    flexible: list[tuple[float, float]] = []
    for item in workload.items:
        if isinstance(item, MatmulLayer):
            tiles = tiles_of(item.k, item.n, target, item.weight_bits)
            macro_work += tiles * target.mvm_cycles(item.vectors)
        elif isinstance(item, DynamicMatmul):
            flexible.append((dynamic_macro_cycles(item, target), vector_cycles(item) / 1.0))
        else:
            vector_work += vector_cycles(item)
    macros, lanes = target.total_macros, target.cores * target.vector_lanes
    return math.ceil(_split_bound(macro_work, macros, vector_work, lanes, flexible))


def _split_bound(
    fixed_a: float, units_a: int, fixed_b: float, units_b: int, flexible: list[tuple[float, float]]
) -> float:
    """min over fractional splits of max((A + sum f*a)/Pa, (B + sum (1-f)*b)/Pb).

    Feasibility of a makespan T is monotone: give resource A the items with the lowest
    a/b first (the most B-work saved per unit of A-capacity). Bisection on T.
    """
    ordered = sorted(flexible, key=lambda ab: ab[0] / ab[1] if ab[1] else math.inf)

    def feasible(t: float) -> bool:
        room_a = t * units_a - fixed_a
        need_b = fixed_b
        for a, b in ordered:
            take = min(1.0, room_a / a) if a > 0 else 1.0
            take = max(0.0, take)
            room_a -= take * a
            need_b += (1.0 - take) * b
        return room_a >= -1e-9 and need_b <= t * units_b + 1e-9

    low = max(fixed_a / units_a, fixed_b / units_b)
    high = low + sum(a / units_a for a, _ in flexible) + 1.0
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (low, mid) if feasible(mid) else (mid, high)
    return low


def min_duration(item: WorkItem, target: Target) -> int:
    """Fastest possible time of one item with the whole machine to itself."""
    macros, lanes = target.total_macros, target.cores * target.vector_lanes
    if isinstance(item, MatmulLayer):
        slots = tiles_of(item.k, item.n, target, item.weight_bits) * item.vectors
        per_macro = max(1, math.ceil(slots / macros))
        return per_macro * target.cycles_per_vector + target.mvm_pipeline_cycles
    if isinstance(item, DynamicMatmul):
        on_vector = math.ceil(vector_cycles(item) / lanes)
        return min(on_vector, math.ceil(dynamic_macro_cycles(item, target) / macros))
    return math.ceil(vector_cycles(item) / lanes)


def _critical_path(workload: Workload, target: Target, source: Source, warm: bool) -> int:
    finish: dict[str, int] = {}
    for item in workload.items:
        start = max((finish[d] for d in item.depends_on), default=0)
        finish[item.name] = start + min_duration(item, target)
        if isinstance(item, MatmulLayer) and not warm:
            # its tiles may compute while later ones load, but the last byte must arrive
            # before the last MVM (one vector) over it
            arrival = math.ceil(item.weight_bytes / target.source_bytes_per_cycle(source))
            finish[item.name] = max(finish[item.name], arrival + target.mvm_cycles(1))
    return max(finish.values(), default=0)
