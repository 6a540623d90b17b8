"""The plan level of the IR: a quantized graph and what the backend planned for one arch.

`tile` makes it from a graph; `map`, `plan-values` and `plan-memory` fill in their plans;
`lower` reads it. It prints as text (tiles per layer, the streaming plan's macro windows,
where each value lives, which weight tiles are in DRAM and which in flash) and verifies
that the plans cover the graph they were made for.
"""

from __future__ import annotations

from dataclasses import dataclass

from cimc.backend.builder.values import ValuePlan
from cimc.backend.plan.memory import MemoryPlan
from cimc.backend.plan.pipeline import PipelinePlan
from cimc.backend.plan.report import format_plan
from cimc.backend.plan.sparsity import SparsityPlan
from cimc.backend.plan.streaming import StreamPlan
from cimc.backend.plan.tiling import TilingPlan
from cimc.backend.plan.workload import Workload
from cimc.errors import CimcError
from cimc.ir.graph import Graph
from cimc.machine.arch import Arch
from cimc.quant.dialect import QLinear


@dataclass(frozen=True)
class PlannedGraph:
    graph: Graph  # the quantized graph (not changed by the backend)
    arch: Arch
    workload: Workload
    tiling: TilingPlan  # static-weight tiles for the arch's macros
    mapped: bool = False  # `map` ran (stream is None when there is no static weight)
    stream: StreamPlan | None = None
    reserve: int = 0  # macros per core left for run-time operands
    # map{mapping=auto} (cimc/backend/plan/duplication.py): stream with duplicated layers,
    # which `lower` prices against stream (None: nothing to price, stream is the plan)
    duplicated: StreamPlan | None = None
    values: ValuePlan | None = None
    memory: MemoryPlan | None = None  # where the weight image lives (plan-memory)
    sparsity: SparsityPlan | None = None  # layers loading only their active rows
    pipeline: PipelinePlan | None = None  # map{mapping=pipeline}: stages, micro-batches
    # pipelined plans (one per stage count tried) carried through plan-values and
    # plan-memory beside this one; `lower` prices them all and keeps the fastest
    pipelines: tuple[PlannedGraph, ...] = ()

    def verify(self) -> None:
        layers = {n.name for n in self.graph.nodes() if isinstance(n.op, QLinear)}
        tiled = {lt.layer.name for lt in self.tiling.layers}
        if not layers <= tiled:
            missing = sorted(layers - tiled)[0]
            raise CimcError(f"the tiling has no tiles for layer %{missing}", "plan")
        if self.stream is not None:
            streamed = {e.tile.layer for e in self.stream.image}
            if streamed != layers:
                odd = sorted(streamed ^ layers)[0]
                raise CimcError(f"the streaming plan and the graph disagree on %{odd}", "plan")
        stored = {st.entry for st in self.memory.tiles} if self.memory is not None else None
        if stored is not None and stored != set(self.stream.image if self.stream else ()):
            raise CimcError("the memory plan does not store the streaming plan's image", "plan")
        if self.values is not None:
            for node in self.graph.nodes():
                if node.name not in self.values.slots:
                    raise CimcError(f"value %{node.name} has no storage", "plan")

    def __str__(self) -> str:
        lines = [f"// plan of @{self.graph.name} for arch '{self.arch.name}'"]
        lines += _tiling_lines(self.tiling)
        if self.mapped:
            lines.append(f"// map: {self.reserve} macros per core kept for run-time operands")
            text = format_plan(self.stream) if self.stream else "; no static weights\n"
            lines += text.rstrip("\n").splitlines()
            if self.duplicated is not None:  # auto: lower prices this plan with copies too
                copies = ", ".join(f"%{k} x{n}" for k, n in self.duplicated.copies.items())
                lines.append(f"// map{{mapping=auto}}: lower also prices copies: {copies}")
            elif self.stream is not None and self.stream.copies:
                copied = len(self.stream.copies)
                lines.append(f"// map{{mapping=duplicate}}: {copied} layers copied")
            if self.pipeline is not None:
                lines += [f"// {line}" for line in self.pipeline.note()]
            for other in self.pipelines:
                assert other.pipeline is not None
                stages = len(other.pipeline.stages)
                lines.append(f"// map: lower also prices a {stages}-stage pipeline")
        if self.values is not None:
            lines += _value_lines(self.values)
        if self.memory is not None:
            lines += _memory_lines(self.memory)
        if self.sparsity is not None and self.sparsity.mode != "none":
            lines.append(f"// plan-sparsity: {self.sparsity.mode}")
            cached = self.sparsity.cached
            lines += [
                f"sparse %{layer}: active rows from "
                + (f"flash, window {self.sparsity.window} in dram" if layer in cached else "dram")
                for layer in self.sparsity.layers
            ]
            lines += [
                f"predicted %{layer}: predicted columns from "
                + (f"flash, window {self.sparsity.window} in dram" if layer in cached else "dram")
                for layer in self.sparsity.predicted
            ]
            lines += [f"bundled %{up} + %{down}" for up, down in self.sparsity.bundles]
            lines += [f"dense %{layer}: rows in flash" for layer in self.sparsity.in_flash]
        return "\n".join(lines) + "\n"


def _tiling_lines(tiling: TilingPlan) -> list[str]:
    lines = [f"// tile: {len(tiling.tiles)} tiles of at most {tiling.rows}x{tiling.cols}"]
    for lt in tiling.layers:
        layer = lt.layer
        lines.append(
            f"tile %{layer.name} [{layer.k} x {layer.n}] x{layer.vectors} vectors:"
            f" k cuts {list(lt.k_cuts)}, n cuts {list(lt.n_cuts)}"
        )
    return lines


def _value_lines(values: ValuePlan) -> list[str]:
    pools = ", ".join(f"{space} {n} bytes" for space, n in sorted(values.pool_bytes.items()))
    lines = [f"// plan-values: pools {pools or 'none'}"]
    for name, where in values.slots.items():
        place = where.kind
        if where.kind == "pool":
            place = f"pool {where.space}+{where.offset}"
        elif where.kind == "alias":
            place = f"alias of %{where.root}"
        lines.append(f"value %{name}: {place}")
    return lines


def _memory_lines(memory: MemoryPlan) -> list[str]:
    lines = [
        f"// plan-memory: weight image {memory.image_bytes('dram')} bytes in dram, "
        f"{memory.image_bytes('flash')} in flash; other dram about {memory.dram_other_bytes} "
        f"of {memory.dram_capacity} bytes"
    ]
    lines += [f"table %{name}: flash" for name in memory.flash_tables]
    if memory.image_bytes("flash"):
        for st in memory.tiles:
            t = st.entry.tile
            lines.append(
                f"tile %{t.layer}[{t.k0}:{t.k1}, {t.n0}:{t.n1}] phase {st.entry.phase} "
                f"core {st.core}: {st.space}+{st.offset}"
            )
    return lines
