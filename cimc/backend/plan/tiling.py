"""Cut static matmuls into macro tiles and pack partial tiles into macro windows.

Why this algorithm:
- Cutting: each [K, N] weight is cut greedily into full R x C tiles plus one edge row
  and one edge column of smaller tiles (K % R rows, N % C columns). Equal-size cuts
  would spread the slack over every macro; greedy cuts concentrate it in a few small
  edge tiles, which packing can then share (a macro holds several tiles in disjoint
  windows, `mload mN[r0:r1,c0:c1]`). The tiles of one output column block (same N-range)
  are reduction partners: their int32 partial sums are added (exact, order-free).
- Packing: full tiles take a macro each; the rest go through first-fit decreasing-height
  shelf packing (FFDH, best-fit shelf). Tiles cannot rotate (rows are the reduction), so
  shelves fit the two edge shapes: R x c tiles sit side by side on a full-height shelf,
  r x C tiles stack as shelves. A packed macro never uses more macros than one per tile,
  so packing can only raise utilization. `span` limits packing to tiles of nearby layers
  (layers sharing a macro serialise their MVMs on it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cimc.backend.plan.workload import MatmulLayer, Workload, packed_cols


@dataclass(frozen=True)
class Tile:
    """Rows k0:k1 and columns n0:n1 of layer `layer` (the `layer_index`-th static layer)."""

    layer: str
    layer_index: int
    kb: int
    nb: int
    k0: int
    k1: int
    n0: int
    n1: int
    bits: int = 8  # 4: two weights a cell (columns n0, n0+1 share the first one)

    @property
    def rows(self) -> int:
        return self.k1 - self.k0

    @property
    def cols(self) -> int:
        """Weight columns (outputs)."""
        return self.n1 - self.n0

    @property
    def cell_cols(self) -> int:
        """Macro cell columns the tile occupies (and bytes per row in the weight image)."""
        return packed_cols(self.cols, self.bits)

    @property
    def cells(self) -> int:
        """Macro cells, and bytes of the weight image."""
        return self.rows * self.cell_cols

    @property
    def key(self) -> tuple[int, int, int]:
        """Program-order key: layer, then output block, then reduction block."""
        return (self.layer_index, self.nb, self.kb)

    @property
    def label(self) -> str:
        return f"{self.layer}[{self.k0}:{self.k1},{self.n0}:{self.n1}]"


@dataclass(frozen=True)
class LayerTiles:
    """The tiles of one layer; `k_cuts`/`n_cuts` are the block boundaries (0 ... K)."""

    layer: MatmulLayer
    index: int
    k_cuts: tuple[int, ...]
    n_cuts: tuple[int, ...]
    tiles: tuple[Tile, ...]

    def partners(self, tile: Tile) -> tuple[Tile, ...]:
        """Reduction partners of `tile`: same output columns, other K-ranges (summed in i32)."""
        return tuple(t for t in self.tiles if t.nb == tile.nb and t.kb != tile.kb)

    def column(self, nb: int) -> tuple[Tile, ...]:
        """All tiles of output block `nb`, in reduction order."""
        return tuple(t for t in self.tiles if t.nb == nb)

    @property
    def n_blocks(self) -> int:
        return len(self.n_cuts) - 1


@dataclass(frozen=True)
class TilingPlan:
    """Tiles of every static layer of a workload for an R x C macro."""

    rows: int
    cols: int
    layers: tuple[LayerTiles, ...]

    @property
    def tiles(self) -> tuple[Tile, ...]:
        return tuple(t for lt in self.layers for t in lt.tiles)

    def of(self, layer: str) -> LayerTiles:
        for lt in self.layers:
            if lt.layer.name == layer:
                return lt
        raise KeyError(layer)


def cut_points(extent: int, size: int) -> tuple[int, ...]:
    """0, size, 2*size, ..., extent: full blocks then one smaller edge block."""
    return (*range(0, extent, size), extent)


def tile_layer(layer: MatmulLayer, index: int, rows: int, cols: int) -> LayerTiles:
    """`cols` macro cells: int4 layers are cut 2 * cols weight columns wide."""
    per_cell = 8 // layer.weight_bits
    k_cuts, n_cuts = cut_points(layer.k, rows), cut_points(layer.n, cols * per_cell)
    tiles = tuple(
        Tile(
            layer.name,
            index,
            kb,
            nb,
            k_cuts[kb],
            k_cuts[kb + 1],
            n_cuts[nb],
            n_cuts[nb + 1],
            layer.weight_bits,
        )
        for nb in range(len(n_cuts) - 1)
        for kb in range(len(k_cuts) - 1)
    )
    return LayerTiles(layer, index, k_cuts, n_cuts, tiles)


def tile_workload(workload: Workload, rows: int, cols: int) -> TilingPlan:
    layers = tuple(tile_layer(layer, i, rows, cols) for i, layer in enumerate(workload.layers))
    return TilingPlan(rows, cols, layers)


@dataclass(frozen=True)
class Window:
    """`tile` held at rows r0:r0+tile.rows, cell columns c0:c0+tile.cell_cols of a macro."""

    tile: Tile
    r0: int
    c0: int

    @property
    def r1(self) -> int:
        return self.r0 + self.tile.rows

    @property
    def c1(self) -> int:
        return self.c0 + self.tile.cell_cols

    def overlaps(self, other: Window) -> bool:
        return (
            self.r0 < other.r1 and other.r0 < self.r1 and self.c0 < other.c1 and other.c0 < self.c1
        )


@dataclass(frozen=True)
class MacroImage:
    """The contents of one macro: disjoint windows, each holding one tile."""

    windows: tuple[Window, ...]

    @property
    def cells_used(self) -> int:
        return sum(w.tile.cells for w in self.windows)

    @property
    def first_key(self) -> tuple[int, int, int]:
        return min(w.tile.key for w in self.windows)


@dataclass
class _Shelf:
    image: int
    y: int
    height: int
    used: int


def pack(
    tiles: Iterable[Tile], rows: int, cols: int, span: int | None = None
) -> tuple[MacroImage, ...]:
    """Macro images holding `tiles`: full tiles alone, partial tiles shelf-packed.

    With `span`, only tiles whose layers fall in the same block of `span` consecutive
    static layers share a macro. Images are ordered by their first tile's program key.
    """
    tile_list = sorted(tiles, key=lambda t: t.key)
    images = [
        MacroImage((Window(t, 0, 0),)) for t in tile_list if t.rows == rows and t.cell_cols == cols
    ]
    partial = [t for t in tile_list if t.rows != rows or t.cell_cols != cols]
    groups: dict[int, list[Tile]] = {}
    for t in partial:
        groups.setdefault(t.layer_index // span if span else 0, []).append(t)
    for group in groups.values():
        images.extend(_shelf_pack(group, rows, cols))
    return tuple(sorted(images, key=lambda image: image.first_key))


def _shelf_pack(tiles: Sequence[Tile], rows: int, cols: int) -> list[MacroImage]:
    shelves: list[_Shelf] = []
    heights: list[int] = []
    contents: list[list[Window]] = []
    for tile in sorted(tiles, key=lambda t: (-t.rows, -t.cell_cols, t.key)):
        shelf = _best_shelf(shelves, tile, cols)
        if shelf is None:
            image = next((i for i, h in enumerate(heights) if h + tile.rows <= rows), None)
            if image is None:
                image = len(heights)
                heights.append(0)
                contents.append([])
            shelf = _Shelf(image, heights[image], tile.rows, 0)
            heights[image] += tile.rows
            shelves.append(shelf)
        contents[shelf.image].append(Window(tile, shelf.y, shelf.used))
        shelf.used += tile.cell_cols
    return [MacroImage(tuple(sorted(ws, key=lambda w: w.tile.key))) for ws in contents]


def _best_shelf(shelves: list[_Shelf], tile: Tile, cols: int) -> _Shelf | None:
    """The fitting shelf wasting the least height (earliest on ties)."""
    fitting = [s for s in shelves if s.height >= tile.rows and s.used + tile.cell_cols <= cols]
    return min(fitting, key=lambda s: s.height - tile.rows, default=None)


def utilization(images: Sequence[MacroImage], rows: int, cols: int) -> float:
    """Weight cells used / cells of the macros allocated (1.0 for no macros)."""
    if not images:
        return 1.0
    return sum(image.cells_used for image in images) / (len(images) * rows * cols)
