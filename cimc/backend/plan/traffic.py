"""Reduction groups and activation traffic implied by a placement.

Why per-core groups: the tiles of one output column block (reduction partners) that sit
on the same core accumulate locally in int32 (`mvm` then `mvm.acc` into one buffer, no
traffic); only one partial per other core crosses the NoC, to the core holding most of
the partners (the home), which adds them. The input rows of a K-range go once to each
core that holds a tile of that K-range. Emission follows the same groups.
"""

from __future__ import annotations

from dataclasses import dataclass

from cimc.backend.plan.mapping import PlacedTile, Placement, layer_vectors, vector_share
from cimc.backend.plan.target import Target
from cimc.backend.plan.workload import Workload


@dataclass(frozen=True)
class CoreGroup:
    """Partners on one core, in reduction order: the first `mvm`, the rest `mvm.acc`."""

    core: int
    tiles: tuple[PlacedTile, ...]


@dataclass(frozen=True)
class ColumnReduction:
    """How output columns n0:n1 of one layer copy are summed; `groups[0]` is the home."""

    layer: str
    copy: int
    nb: int
    n0: int
    n1: int
    groups: tuple[CoreGroup, ...]

    @property
    def home(self) -> int:
        return self.groups[0].core

    @property
    def senders(self) -> tuple[int, ...]:
        return tuple(g.core for g in self.groups[1:])


def reductions(placement: Placement, target: Target) -> tuple[ColumnReduction, ...]:
    """One reduction per (layer, copy, output block), in program order."""
    columns: dict[tuple[int, int, int], list[PlacedTile]] = {}
    for pt in placement.tiles:
        columns.setdefault((pt.tile.layer_index, pt.copy, pt.tile.nb), []).append(pt)
    result = []
    for (_, copy, _), tiles in sorted(columns.items()):
        by_core: dict[int, list[PlacedTile]] = {}
        for pt in sorted(tiles, key=lambda p: p.tile.kb):
            by_core.setdefault(pt.core, []).append(pt)
        home = max(sorted(by_core), key=lambda c: len(by_core[c]))
        others = sorted((c for c in by_core if c != home), key=lambda c: (target.hops(c, home), c))
        groups = tuple(CoreGroup(c, tuple(by_core[c])) for c in (home, *others))
        first = tiles[0].tile
        result.append(ColumnReduction(first.layer, copy, first.nb, first.n0, first.n1, groups))
    return tuple(result)


@dataclass(frozen=True)
class Movement:
    """Estimated activation traffic of a placement, per inference."""

    input_bytes: int  # input rows delivered to each (core, K-range) holding tiles
    partial_bytes: int  # int32 partial sums sent to the home core
    partial_hop_bytes: int  # the same, times mesh hops
    core_ingress: tuple[int, ...]  # bytes entering each core (inputs and partials)


def movement(placement: Placement, workload: Workload, target: Target) -> Movement:
    """Input delivery and partial-sum traffic implied by `placement`."""

    def share(layer: str, copy: int) -> int:
        copies = placement.copies_of(layer)
        return vector_share(layer_vectors(workload, layer), copies, copy)

    ingress = [0] * target.cores
    inputs = {(pt.tile.layer, pt.copy, pt.core, pt.tile.kb): pt.tile.rows for pt in placement.tiles}
    for (layer, copy, core, _), rows in sorted(inputs.items()):
        ingress[core] += share(layer, copy) * rows
    input_bytes = sum(ingress)
    partial = hop = 0
    for red in reductions(placement, target):
        size = share(red.layer, red.copy) * (red.n1 - red.n0) * 4
        partial += size * len(red.senders)
        hop += size * sum(target.hops(core, red.home) for core in red.senders)
        ingress[red.home] += size * len(red.senders)
    return Movement(input_bytes, partial, hop, tuple(ingress))
