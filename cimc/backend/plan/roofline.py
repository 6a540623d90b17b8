"""Arithmetic intensity per layer and the roofline position of a whole plan.

Why: whether a layer is bound by memory or by compute is a matter of ops per DRAM byte.
A layer whose weights stream from DRAM/flash every inference does 2*vectors ops per weight
byte, which for decode (one vector) is 2 ops/byte: far left of the ridge, so load
bandwidth, not the macros, sets the time. Resident weights cost no DRAM bytes in steady state.
"""

from __future__ import annotations

from dataclasses import dataclass

from cimc.backend.plan.streaming import StreamPlan
from cimc.backend.plan.target import Target
from cimc.backend.plan.workload import MatmulLayer, Workload


@dataclass(frozen=True)
class LayerIntensity:
    layer: str
    ops: int  # 2 * MACs of one inference
    streamed_bytes: int  # weight bytes this layer loads per steady-state inference

    @property
    def ops_per_byte(self) -> float:
        return self.ops / self.streamed_bytes if self.streamed_bytes else float("inf")


@dataclass(frozen=True)
class Roofline:
    ops: int
    streamed_bytes: int
    peak_ops_per_cycle: float  # every macro busy: rows * cols * 2 ops per vector
    bytes_per_cycle: float  # of the plan's weight source

    @property
    def ops_per_byte(self) -> float:
        return self.ops / self.streamed_bytes if self.streamed_bytes else float("inf")

    @property
    def ridge_ops_per_byte(self) -> float:
        """Intensity at which load bandwidth and macro compute take equal time."""
        return self.peak_ops_per_cycle / self.bytes_per_cycle

    @property
    def memory_bound(self) -> bool:
        return self.ops_per_byte < self.ridge_ops_per_byte

    @property
    def attainable_ops_per_cycle(self) -> float:
        return min(self.peak_ops_per_cycle, self.ops_per_byte * self.bytes_per_cycle)


def layer_intensities(plan: StreamPlan, workload: Workload) -> tuple[LayerIntensity, ...]:
    """Static layers in program order with their steady-state streamed bytes."""
    streamed: dict[str, int] = {}
    resident = {p.index for p in plan.resident}
    for entry in plan.image:
        if entry.phase not in resident:
            streamed[entry.tile.layer] = streamed.get(entry.tile.layer, 0) + entry.nbytes
    return tuple(
        LayerIntensity(layer.name, _ops(layer), streamed.get(layer.name, 0))
        for layer in workload.layers
    )


def roofline(plan: StreamPlan, workload: Workload, target: Target) -> Roofline:
    """Static matmul work of one steady-state inference against the target's roofline."""
    peak = target.total_macros * target.rows * target.cols * 2 / target.cycles_per_vector
    return Roofline(
        ops=sum(_ops(layer) for layer in workload.layers),
        streamed_bytes=plan.bytes_per_inference,
        peak_ops_per_cycle=peak,
        bytes_per_cycle=target.source_bytes_per_cycle(plan.source),
    )


def _ops(layer: MatmulLayer) -> int:
    return 2 * layer.vectors * layer.k * layer.n
