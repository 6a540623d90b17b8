"""`backend`: every backend stage in order, and `compile_graph`, its one-call form.

compiled = compile_graph(qgraph, load_arch("tiny"))   # tile ... merge-sends, validated
"""

from __future__ import annotations

from dataclasses import dataclass

from cimc.backend.builder.compiled import Compiled
from cimc.backend.lower.table import LOWERINGS, LoweringTable
from cimc.backend.stages.lowering import Lower
from cimc.backend.stages.planning import (
    MapWeights,
    PlanMemory,
    PlanSparsity,
    PlanValues,
    TileWeights,
)
from cimc.backend.stages.program import program_passes
from cimc.ir.graph import Graph
from cimc.machine.arch import Arch
from cimc.passes.manager import CompositePass, Pass, PassManager, register_pass, verify_deep


@register_pass
@dataclass(frozen=True)
class Backend(CompositePass):
    NAME = "backend"

    def passes(self) -> list[Pass]:
        return [
            TileWeights(),
            MapWeights(),
            PlanValues(),
            PlanMemory(),
            PlanSparsity(),
            Lower(),
            *program_passes(),
        ]


def configure_backend(
    p: Pass,
    arch: Arch,
    name: str | None = None,
    streaming: str | None = None,
    table: LoweringTable | None = None,
    sparsity: str | None = None,
    window: int | None = None,
    mapping: str | None = None,
    stages: int | None = None,
    micro_batches: int | None = None,
) -> Pass:
    """`p` with what the caller knows set: the arch on tile, the streaming policy, the
    mapping and the pipeline's stages and micro-batches on map,
    the sparsity mode and window on plan-sparsity, the program name and lowering table on lower;
    other passes unchanged."""
    from dataclasses import replace

    if isinstance(p, TileWeights):
        return replace(p, target=arch)
    if isinstance(p, MapWeights) and (streaming, mapping, stages, micro_batches) != (None,) * 4:
        return replace(
            p,
            policy=streaming or p.policy,
            mapping=mapping or p.mapping,
            stages=stages or p.stages,
            micro_batches=micro_batches or p.micro_batches,
        )
    if isinstance(p, PlanSparsity) and (sparsity is not None or window is not None):
        return replace(p, mode=sparsity or p.mode, window=window)
    if isinstance(p, Lower):
        return replace(p, name=name or p.name, table=table or p.table)
    return p


def compile_graph(
    graph: Graph,
    arch: Arch,
    name: str = "model",
    check: bool = True,
    streaming: str = "auto",
    table: LoweringTable = LOWERINGS,
    sparsity: str = "none",
    mapping: str = "auto",
) -> Compiled:
    """Lower a quantized graph to a program for `arch` by the `backend` passes (each
    verified, the final program by the machine's validator, unless check=False);
    `streaming` is the weight streaming policy (cimc/backend/plan/streaming.py), `mapping`
    the map pass's (cimc/backend/plan/duplication.py)."""
    passes = [
        configure_backend(p, arch, name, streaming, table, sparsity, mapping=mapping)
        for p in Backend().passes()
    ]
    graph.verify()
    result: Compiled = PassManager(passes, verify_each=check).run(graph)
    if check:
        verify_deep(result)
    return result
