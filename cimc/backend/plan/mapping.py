"""Weight-stationary placement of packed tiles on (core, macro, window).

Why this algorithm: the data a static matmul moves is (a) its input rows, sent to every
core holding a tile of that K-range, and (b) int32 partial sums of reduction partners on
different cores. Both shrink when the tiles of one output column block (the reduction
partners, which are consecutive in program-key order) sit on one core. But a core runs
its column blocks one after another and a block's tiles as a chain of `mvm.acc` into one
accumulator (cimc/backend/lower/linear.py), while cores run in parallel. So macro images
are taken in program order and grouped into units (at most `REDUCTION_GROUP` consecutive
images of one layer's output column block), and the units go round robin over the cores
in snake order (mesh neighbours): each to the first core from the one after the previous
unit's that holds it whole; a unit larger than any core's free space is split over
consecutive snake-order cores. On BERT-base on `large`, round robin beat packing the
units core after core, and groups of `REDUCTION_GROUP` beat single images
(benchmarks/FINDINGS.md, "Reduction groups, round robin").

Duplication (optional, `map{mapping=duplicate}`, cimc/backend/plan/duplication.py): while
free macros remain, the hottest layer (largest time on its busiest macro for its share of
the input vectors) that fits gets another copy, packed alone, on cores the layer does not
run on yet where there is room; copies split the input vectors between them, so a layer
has at most one copy per core (more would wait for a core that runs one already) and per
vector.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from cimc.backend.plan.target import Target
from cimc.backend.plan.tiling import MacroImage, Tile, pack
from cimc.backend.plan.workload import MatmulLayer, Workload
from cimc.errors import CimcError

MacroId = tuple[int, int]  # (core, macro index within the core)
REDUCTION_GROUP = 6  # tiles of one column block chained on one core at most


@dataclass(frozen=True)
class PlacedMacro:
    """Macro `macro` of core `core` holds `image`; `copy` > 0 marks a duplicate."""

    core: int
    macro: int
    image: MacroImage
    copy: int = 0


@dataclass(frozen=True)
class PlacedTile:
    """`tile` (weight rows k0:k1, columns n0:n1) held at (r0, c0) of macro `macro` on core
    `core`; `copy` > 0 marks a duplicate. The one placement type of planner and lowering."""

    tile: Tile
    core: int
    macro: int
    r0: int = 0
    c0: int = 0
    copy: int = 0

    @classmethod
    def at(
        cls,
        k0: int,
        k1: int,
        n0: int,
        n1: int,
        core: int,
        macro: int,
        r0: int = 0,
        c0: int = 0,
        bits: int = 8,
    ) -> PlacedTile:
        """A block of a run-time operand (or of a weight placed without the planner)."""
        return cls(Tile("", -1, -1, -1, k0, k1, n0, n1, bits), core, macro, r0, c0)

    @property
    def k0(self) -> int:
        return self.tile.k0

    @property
    def k1(self) -> int:
        return self.tile.k1

    @property
    def n0(self) -> int:
        return self.tile.n0

    @property
    def n1(self) -> int:
        return self.tile.n1


@dataclass(frozen=True)
class Placement:
    """Where every tile (and duplicate copy) lives; `copies[layer]` >= 1."""

    rows: int
    cols: int
    macros: tuple[PlacedMacro, ...]
    copies: tuple[tuple[str, int], ...]

    @property
    def tiles(self) -> tuple[PlacedTile, ...]:
        return tuple(
            PlacedTile(w.tile, pm.core, pm.macro, w.r0, w.c0, pm.copy)
            for pm in self.macros
            for w in pm.image.windows
        )

    @property
    def slots(self) -> tuple[MacroId, ...]:
        return tuple((pm.core, pm.macro) for pm in self.macros)

    @property
    def utilization(self) -> float:
        """Weight cells used / cells of the macros allocated."""
        if not self.macros:
            return 1.0
        used = sum(pm.image.cells_used for pm in self.macros)
        return used / (len(self.macros) * self.rows * self.cols)

    def copies_of(self, layer: str) -> int:
        return dict(self.copies).get(layer, 1)

    @property
    def duplicated(self) -> tuple[tuple[str, int], ...]:
        return tuple((name, n) for name, n in self.copies if n > 1)


def all_slots(target: Target) -> tuple[MacroId, ...]:
    return tuple((c, m) for c in range(target.cores) for m in range(target.macros_per_core))


def place(
    tiles: Sequence[Tile],
    target: Target,
    slots: Sequence[MacroId] | None = None,
    *,
    span: int | None = None,
    workload: Workload | None = None,
    duplicate: bool = False,
) -> Placement:
    """Pack `tiles` and place them on `slots` (default: every macro); see the module doc."""
    free = _FreeSlots(target, all_slots(target) if slots is None else slots)
    images = pack(tiles, target.rows, target.cols, span)
    if len(images) > free.count:
        raise CimcError(
            f"{len(images)} macros needed, {free.count} available",
            f"placement on {target.name}",
        )
    placed = _place_images(images, free, copy=0)
    order = {t.layer: t.layer_index for t in tiles}
    copies = {name: 1 for name in sorted(order, key=lambda name: order[name])}
    if duplicate and workload is not None:
        placed += _duplicate(tiles, target, free, workload, copies, placed)
    return Placement(target.rows, target.cols, tuple(placed), tuple(copies.items()))


class _FreeSlots:
    """Free macros per core, handed out in snake order starting from a cursor core."""

    def __init__(self, target: Target, slots: Sequence[MacroId]) -> None:
        valid = set(all_slots(target))
        if len(set(slots)) != len(slots) or not set(slots) <= valid:
            raise CimcError("slots must be distinct macros of the target", f"target {target.name}")
        self.order = [c for c in target.snake_order() if any(s[0] == c for s in slots)]
        self.free = {c: sorted(m for core, m in slots if core == c) for c in self.order}
        self.cursor = 0

    @property
    def count(self) -> int:
        return sum(len(ms) for ms in self.free.values())

    def take(self, n: int, avoid: Collection[int] = ()) -> list[MacroId]:
        """`n` slots: whole on the first core from the cursor that fits, a core not in
        `avoid` first (the cursor then moves past it: the next unit goes to another
        core), else split."""
        rotation = self.order[self.cursor :] + self.order[: self.cursor]
        fits = [c for c in rotation if len(self.free[c]) >= n]
        whole = next((c for c in fits if c not in avoid), fits[0] if fits else None)
        cores = [whole] if whole is not None else rotation
        taken: list[MacroId] = []
        for core in cores:
            while self.free[core] and len(taken) < n:
                taken.append((core, self.free[core].pop(0)))
            if len(taken) == n:
                self.cursor = self.order.index(core)
                if whole is not None:
                    self.cursor = (self.cursor + 1) % len(self.order)
                break
        return taken


def _units(images: Sequence[MacroImage]) -> list[list[MacroImage]]:
    """Consecutive images of one layer's output column block form units of at most
    REDUCTION_GROUP images."""
    units: list[list[MacroImage]] = []
    for image in images:
        last = units[-1] if units else None
        if last and last[0].first_key[:2] == image.first_key[:2] and len(last) < REDUCTION_GROUP:
            last.append(image)
        else:
            units.append([image])
    return units


def _place_images(
    images: Sequence[MacroImage], free: _FreeSlots, copy: int, avoid: Collection[int] = ()
) -> list[PlacedMacro]:
    """Units of `images` on free slots; `avoid`: cores to use only when no other fits."""
    placed: list[PlacedMacro] = []
    for unit in _units(images):
        for (core, macro), image in zip(free.take(len(unit), avoid), unit, strict=True):
            placed.append(PlacedMacro(core, macro, image, copy))
    return placed


def _duplicate(
    tiles: Sequence[Tile],
    target: Target,
    free: _FreeSlots,
    workload: Workload,
    copies: dict[str, int],
    original: Sequence[PlacedMacro],
) -> list[PlacedMacro]:
    by_layer = {name: [t for t in tiles if t.layer == name] for name in copies}
    alone = {name: pack(ts, target.rows, target.cols) for name, ts in by_layer.items()}
    placed: list[PlacedMacro] = []
    while True:
        candidates = [
            name
            for name in copies
            if len(alone[name]) <= free.count
            and copies[name] < min(layer_vectors(workload, name), target.cores)
        ]
        if not candidates:
            return placed
        hottest = max(candidates, key=lambda n: _heat(n, copies[n], alone[n], workload, target))
        # a copy on cores the layer already runs on would wait for them: other cores first
        busy = {pm.core for pm in (*original, *placed) if _holds(pm, hottest)}
        placed += _place_images(alone[hottest], free, copies[hottest], busy)
        copies[hottest] += 1


def _holds(pm: PlacedMacro, layer: str) -> bool:
    return any(w.tile.layer == layer for w in pm.image.windows)


def layer_vectors(workload: Workload, layer: str) -> int:
    item = workload.item(layer)
    if not isinstance(item, MatmulLayer):
        raise CimcError("tiles name a work item that is not a static matmul", f"layer {layer}")
    return item.vectors


def _heat(
    layer: str, copies: int, images: Sequence[MacroImage], workload: Workload, target: Target
) -> tuple[int, int, int]:
    """Time of one copy on its busiest macro; ties: more weight, then earlier layer."""
    share = math.ceil(layer_vectors(workload, layer) / copies)
    busiest = max(len(image.windows) for image in images)
    cells = sum(image.cells_used for image in images)
    return (target.mvm_cycles(share) * busiest, cells, -workload.position(layer))


def vector_share(vectors: int, copies: int, copy: int) -> int:
    """Input vectors copy `copy` of a layer processes (copies split them evenly)."""
    return vectors // copies + (1 if copy < vectors % copies else 0)
