"""The tiled MVM engine shared by linear, matmul and attention: tile slots, weight
sources, placement helpers and a tile loader that pipelines weight DMAs.

A `PlacedTile` (cimc/backend/plan/mapping.py) is a weight tile (rows k0:k1 = reduction,
columns n0:n1 = outputs) at a window of one macro of one core. `mvm_tiles` accumulates
x @ W over the tiles of one column block with `mvm` / `mvm.acc`; `TileLoader` writes each
tile right before its first MVM, skipping tiles a macro already holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cimc.backend.builder.alloc import cols, split_even, sub
from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.plan.mapping import PlacedTile, Placement
from cimc.errors import CimcError
from cimc.machine.program import MacroRef, View

TileKey = tuple[int, int, int, int]  # (k0, k1, n0, n1) of a weight tile


@dataclass(frozen=True)
class WeightRef:
    """The [K x N] right operand: `view` (or, transposed, `view` is [N x K] as for K^T),
    or an `image` giving each tile's own [rows x cols] view (a load-ordered weight image,
    possibly already staged in gb).

    `key` names a static weight so resident tiles are not reloaded; None means run-time
    data, loaded every time.
    """

    view: View | None
    transposed: bool = False
    key: object = None
    image: Mapping[TileKey, View] | None = None

    def tile(self, s: PlacedTile) -> View:
        if self.image is not None:
            return self.image[(s.k0, s.k1, s.n0, s.n1)]
        assert self.view is not None
        if self.transposed:
            return sub(self.view, s.n0, s.n1, s.k0, s.k1)
        if s.tile.bits == 4:  # a packed [K x ceil(N/2)] weight: tiles start at even columns
            return sub(self.view, s.k0, s.k1, s.n0 // 2, s.n0 // 2 + s.tile.cell_cols)
        return sub(self.view, s.k0, s.k1, s.n0, s.n1)


def image_views(blob: View, entries: Sequence[tuple[TileKey, int]]) -> dict[TileKey, View]:
    """Tile views into a 1-D weight image (`blob` is 1 x bytes): each (k0, k1, n0, n1)
    tile is stored row-major and contiguous at its byte offset."""
    out = {}
    for (k0, k1, n0, n1), offset in entries:
        r, c = k1 - k0, n1 - n0
        if offset < 0 or offset + r * c > blob.cols:
            raise CimcError(f"weight tile at offset {offset} lies outside the image", None)
        out[(k0, k1, n0, n1)] = View(
            blob.space,
            blob.addr + offset,
            "i8",
            r,
            c,
            symbol=blob.symbol,
            offset=blob.offset + offset if blob.symbol is not None else 0,
        )
    return out


def auto_split(b: ProgramBuilder, x: View, n: int) -> str:
    """ "n" (column blocks per core) or "k" (reduction blocks per core), by the cycles of
    the traffic each implies: under "n" every core reads all of x, under "k" each core
    reads its K range once but sends int32 partial sums home over the NoC. "k" also
    when a core could not hold every token of x."""
    t, k = x.shape
    m, arch = b.arch.macro, b.arch
    kc = min(len(b.cores), -(-k // m.rows))
    if kc < 2:
        return "n"
    nc = min(len(b.cores), -(-n // m.cols))
    x_bpc = arch.dram_bytes_per_cycle if x.space == "dram" else arch.memory.gb_bits_per_cycle / 8
    noc_bpc = arch.chip.noc_bits_per_cycle / 8
    by_n = nc * t * k / x_bpc
    by_k = t * k / x_bpc + t * n * 4 * (kc - 1) / (noc_bpc * kc)
    fits = t * k <= (arch.core.scratchpad_bytes - 2 * m.rows * m.cols) // 2
    return "n" if fits and by_n <= by_k else "k"


def place_tiles(
    b: ProgramBuilder,
    k: int,
    n: int,
    cores: Sequence[int] | None = None,
    split: str = "n",
    bits: int = 8,
) -> tuple[PlacedTile, ...]:
    """A simple placement: output column blocks (split="n") or reduction blocks
    (split="k", partial sums reduced over cores) spread evenly over `cores`; each core's
    tiles take its macros round robin at window (0, 0); `bits` = 4: packed int4 tiles."""
    rows, ncols = b.arch.macro.rows, b.arch.macro.cols * (8 // bits)
    kc = [(a, min(k, a + rows)) for a in range(0, k, rows)]
    nc = [(a, min(n, a + ncols)) for a in range(0, n, ncols)]
    use = tuple(cores or b.cores)
    if split not in ("n", "k"):
        raise CimcError(f"unknown split {split!r}; use 'n' or 'k'", b.loc)
    along = nc if split == "n" else kc
    owner = {}
    for core, (a, z) in zip(use, split_even(len(along), len(use)), strict=False):
        owner.update({i: core for i in range(a, z)})
    count = dict.fromkeys(use, 0)
    slots = []
    for ni, (n0, n1) in enumerate(nc):
        for ki, (k0, k1) in enumerate(kc):
            core = owner[ni if split == "n" else ki]
            macro = count[core] % b.arch.core.macros
            slots.append(PlacedTile.at(k0, k1, n0, n1, core, macro, bits=bits))
            count[core] += 1
    return tuple(slots)


def slots_from_placement(placement: Placement, layer: str, copy: int = 0) -> tuple[PlacedTile, ...]:
    """The tiles of `layer` (copy `copy`) as placed by cimc.backend.plan.mapping.place."""
    return tuple(pt for pt in placement.tiles if pt.tile.layer == layer and pt.copy == copy)


def tile_window(s: PlacedTile) -> MacroRef:
    return MacroRef(s.macro, s.r0, s.r0 + s.k1 - s.k0, s.c0, s.c0 + s.tile.cell_cols)


def mvm_opcode(s: PlacedTile, accumulate: bool) -> str:
    """mvm of an int8 tile, mvm.i4 of a packed int4 one (SPEC section 4)."""
    op = "mvm.i4" if s.tile.bits == 4 else "mvm"
    return f"{op}.acc" if accumulate else op


def windows_overlap(a: MacroRef, c: MacroRef) -> bool:
    return a.index == c.index and a.r0 < c.r1 and c.r0 < a.r1 and a.c0 < c.c1 and c.c0 < a.c1


class TileLoader:
    """Writes weight tiles of one core into its macros, in a known order.

    Tiles outside sp/gb pass through scratchpad staging buffers used in turn. Because a
    core issues in order, a DMA emitted after an MVM could not start before that MVM; so
    the DMA of the next tile in `order` is emitted before the current tile's mload (a
    software pipeline of depth 2), letting it overlap the current write and MVM.
    """

    def __init__(
        self,
        b: ProgramBuilder,
        core: int,
        w: WeightRef,
        order: Sequence[PlacedTile] = (),
        staging: Sequence[View] = (),
    ) -> None:
        self.b, self.core, self.w = b, core, w
        self.order, self.staging = list(order), list(staging)
        self.pos = 0
        self.turn = 0
        self.staged: dict[int, View] = {}

    def _key(self, s: PlacedTile) -> object:
        return None if self.w.key is None else (self.w.key, s.k0, s.k1, s.n0, s.n1)

    def _stage(self, i: int, s: PlacedTile) -> View:
        """The tile's source, DMA'd into the next staging buffer when it is in dram/flash."""
        src = self.w.tile(s)
        if src.space in ("sp", "gb"):
            return src
        if i in self.staged:
            return self.staged.pop(i)
        if not self.staging:
            raise CimcError("weights in dram/flash need staging buffers", self.b.loc)
        self.turn = (self.turn + 1) % len(self.staging)
        stage = View("sp", self.staging[self.turn].addr, "i8", src.rows, src.cols)
        self.b.emit(self.core, "dma", stage, src)
        return stage

    def ensure(self, s: PlacedTile) -> MacroRef:
        """Make the macro window of `s` hold its tile; returns the window."""
        i = self.pos if self.pos < len(self.order) and self.order[self.pos] == s else -1
        self.pos += i >= 0
        ref, key = tile_window(s), self._key(s)
        hook = self.b.hook
        if hook is not None and key is not None:
            hook.need(self.core, key)  # a prefetched tile: its load is emitted by now
        if self.b.holds(self.core, s.macro, ref, key):
            return ref
        src = self._stage(i, s)
        nxt = i + 1 if 0 <= i < len(self.order) - 1 else -1
        if nxt >= 0 and len(self.staging) > 1:
            t = self.order[nxt]
            tk = self._key(t)
            fresh = not self.b.holds(self.core, t.macro, tile_window(t), tk)
            owned = hook is not None and tk is not None and hook.owns(tk)  # prefetched
            if not owned and (fresh or windows_overlap(ref, tile_window(t))):
                self.staged[nxt] = self._stage(nxt, t)
        self.b.mload(self.core, s.macro, s.r0, s.c0, src, key, transpose=self.w.transposed)
        return ref


def mvm_tiles(
    b: ProgramBuilder,
    acc: View,
    x: View,
    kbase: int,
    slots: Sequence[PlacedTile],
    loader: TileLoader,
    accumulate: bool = False,
) -> None:
    """acc (+)= x[:, k0-kbase : k1-kbase] @ W[k0:k1, n0:n1] summed over `slots` (one core,
    one column block; acc columns start at the block's n0)."""
    n0 = min(t.n0 for t in slots)
    for i, s in enumerate(slots):
        ref = loader.ensure(s)
        dst = cols(acc, s.n0 - n0, s.n1 - n0)
        op = mvm_opcode(s, accumulate or i > 0)
        b.emit(loader.core, op, dst, cols(x, s.k0 - kbase, s.k1 - kbase), ref)
