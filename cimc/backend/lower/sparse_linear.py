"""Lowering of a sparse `linear` (cimc/backend/plan/sparsity.py): only the weight rows of
the input columns that are non-zero in some token are loaded.

Integer steps: acc = x @ W = sum over the active columns j of x[:, j] * W[j, :], which
`nzidx` lists at run time (ascending, then -1s). Every core of the layer:
1. loads x [T x K] into its scratchpad and lists its active columns: idx = nzidx(x);
2. packs the inputs: xp[:, i] = x[:, idx[i]] (0 where idx[i] = -1), a `gather.m` of the
   rows of x^T (for one token x itself is that column);
3. for each of its tiles (rows k0:k1 of the packed order, columns n0:n1) gathers the named
   rows W[idx[k0:k1], n0:n1] from the neuron-major `NAME.rows` constant (`gather.m`: rows
   named -1 are not read), writes them into the tile's macro window (`mload.m`: only the
   named rows) and accumulates xp[:, k0:k1] @ window. Rows named -1 face a zero input, so
   whatever the window holds there adds 0: the sum is the dense sum, term for term.
Partial sums of a column block on several cores go to its home core, which adds the bias
and requantizes, as for a dense linear (linear.py). The tile slots are the streaming plan's
(same macros, same phases), so the other layers' prefetched tiles flow around them.
When a core's scratchpad cannot hold the layer's buffers (many tokens), the layer is
lowered dense from the same `NAME.rows` constant.
With a window (rows in flash, cimc/backend/plan/window.py), the layer's first core copies
the rows the run needs into the DRAM cache first (window_fill.py) and the tiles gather from
the cache instead of the constant. A bundled down-projection (`--sparsity predict`) copies
nothing: its rows are the second part of the records the up-projection's fill copied (the
neurons it needs are among the predicted ones).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cimc.backend.builder.alloc import cols, sub
from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.lower.common import SLACK, req_consts
from cimc.backend.lower.linear import (
    ColumnBlock,
    bias_requant,
    block_sum,
    column_blocks,
    lower_linear,
)
from cimc.backend.lower.tiles import PlacedTile, TileKey, tile_window
from cimc.backend.lower.window_fill import (
    WindowCache,
    declare_cache,
    fill_bytes,
    fill_cache,
    publish,
)
from cimc.machine.program import DType, Space, View
from cimc.quant.plans import LinearPlan


@dataclass(frozen=True)
class _Core:
    """One core's buffers: its packed inputs and index, accumulators, staging."""

    xp: View  # packed inputs [T x K]
    idx: View  # active columns [K x 1]
    acc: View  # [T x widest] int32
    tmp: View | None  # partner partial sums received by a home core
    staging: tuple[View, View]


def index_dtype(k: int) -> DType:
    """The narrowest index dtype holding column numbers 0..k-1."""
    return "i16" if k - 1 <= 32767 else "i32"


def lower_sparse_linear(
    b: ProgramBuilder,
    x: View,
    y: View,
    plan: LinearPlan,
    slots: Sequence[PlacedTile],
    name: str,
    window: int | None = None,
    bundled: tuple[View, View] | None = None,
) -> None:
    """y = REQ(x @ W + bias) loading only the rows of W whose x column is non-zero; the
    neuron-major rows are a constant in DRAM, or in flash behind a DRAM cache of the
    neurons of the last `window` runs, or (`bundled`: the rows' part of a bundled FFN's
    record constant, and where to gather them, which the up-projection filled) parts of
    the FFN's records."""
    k, n = plan.weight.shape
    if bundled is not None:
        w, wc = bundled[0], None
    else:
        space: Space = "dram" if window is None else "flash"
        w = b.const(f"{name}.rows", plan.weight, "i8", space)
        wc = declare_cache(b, name, w, window) if window is not None else None
    blocks = column_blocks(slots, k, n, b.loc)
    if not _fits(b, x, slots, blocks, wc is not None):
        lower_linear(b, x, y, plan, slots=slots, name=name, weight_image=_dense_tiles(w, slots))
        return
    bias = b.const(f"{name}.b", plan.bias.reshape(1, n), "i32")
    rc = req_consts(b, name, plan.requant, n)
    widest = max(bl.n1 - bl.n0 for bl in blocks)
    order = _cores(slots)
    fill = _filler(b, wc, order) if wc is not None else None
    cores = {  # the leader (first core) first: it fills the cache
        c: _prepare(b, c, x, widest, _is_home(c, blocks), fill if c == order[0] else None)
        for c in order
    }
    table = wc.cache if wc is not None else (bundled[1] if bundled is not None else w)
    for bl in blocks:
        acc = _block(b, bl, cores, table, name)
        with b.scratch(bl.home) as sc:
            out = bias_requant(b, sc, acc, bl.n0, bias, rc, y)
            b.emit(bl.home, "dma", cols(y, bl.n0, bl.n1), out)
    for core, cb in cores.items():
        extra = (cb.tmp,) if cb.tmp is not None else ()
        b.free(core, cb.xp, cb.idx, cb.acc, *extra, *cb.staging)


def _filler(b: ProgramBuilder, wc: WindowCache, order: list[int]) -> Callable[[View], None]:
    """The leader's cache fill from its copy of x, then the others may read the cache."""

    def fill(xs: View) -> None:
        token = fill_cache(b, order[0], xs, wc, index_dtype(xs.cols))
        publish(b, order[0], token, order)

    return fill


def _cores(slots: Sequence[PlacedTile]) -> list[int]:
    return sorted({s.core for s in slots})


def _is_home(core: int, blocks: Sequence[ColumnBlock]) -> bool:
    """Does the core receive partial sums (home of a block split over cores)?"""
    return any(bl.home == core and len(bl.parts) > 1 for bl in blocks)


def _need(b: ProgramBuilder, x: View, widest: int, home: bool, fill: bool) -> int:
    """Scratchpad bytes of one core's buffers, the epilogue's (and the cache fill's)
    included."""
    t, k = x.shape
    m = b.arch.macro
    packed = t * k * (3 if t > 1 else 2)  # x, its transpose and the packed transpose
    index = k * (2 if index_dtype(k) == "i16" else 4)
    acc = t * widest * 4 * (2 if home else 1)
    epilogue = t * widest * (4 + 8) + widest * 16 + 8 * SLACK
    need = packed + index + acc + 2 * m.rows * m.cols + epilogue
    # the fill's buffers live beside x only, freed before the others are allocated
    return max(need, t * k + fill_bytes(t, k)) if fill else need


def _fits(
    b: ProgramBuilder,
    x: View,
    slots: Sequence[PlacedTile],
    blocks: Sequence[ColumnBlock],
    fill: bool = False,
) -> bool:
    widest = max(bl.n1 - bl.n0 for bl in blocks)
    return all(
        _need(b, x, widest, _is_home(c, blocks), fill) <= b.sp_largest_free(c)
        for c in _cores(slots)
    )


def _dense_tiles(w: View, slots: Sequence[PlacedTile]) -> dict[TileKey, View]:
    """Every tile as a strided view of the neuron-major rows (the dense fallback)."""
    return {(s.k0, s.k1, s.n0, s.n1): sub(w, s.k0, s.k1, s.n0, s.n1) for s in slots}


def _prepare(
    b: ProgramBuilder,
    core: int,
    x: View,
    widest: int,
    home: bool,
    fill: Callable[[View], None] | None = None,
) -> _Core:
    """x into the core, its active columns listed and its inputs packed in their order;
    `fill` (the leader of a windowed layer) fills the cache from x first."""
    t, k = x.shape
    xs = b.alloc(core, "i8", t, k)
    b.emit(core, "dma", xs, x)
    if fill is not None:
        fill(xs)
    idx = b.alloc(core, index_dtype(k), k, 1)
    b.emit(core, "nzidx", idx, xs)
    if t == 1:  # one token: x is the column to gather from (same bytes as k x 1)
        column = View("sp", xs.addr, "i8", k, 1)
        packed = b.alloc(core, "i8", k, 1)
        b.emit(core, "gather.m", packed, column, idx)
        b.free(core, xs)
        xp = View("sp", packed.addr, "i8", 1, k)
    else:
        xt, pt = b.alloc(core, "i8", k, t), b.alloc(core, "i8", k, t)
        b.emit(core, "transpose", xt, xs)
        b.emit(core, "gather.m", pt, xt, idx)
        b.emit(core, "transpose", xs, pt)
        b.free(core, xt, pt)
        xp = xs
    m = b.arch.macro
    acc = b.alloc(core, "i32", t, widest)
    tmp = b.alloc(core, "i32", t, widest) if home else None
    staging = (b.alloc(core, "i8", m.rows, m.cols), b.alloc(core, "i8", m.rows, m.cols))
    return _Core(xp, idx, acc, tmp, staging)


def _block(b: ProgramBuilder, bl: ColumnBlock, cores: dict[int, _Core], w: View, name: str) -> View:
    """The block's sum (`block_sum`): each core's tiles, each gathered (`_tiles`)."""
    width = bl.n1 - bl.n0
    accs = {core: cols(cores[core].acc, 0, width) for core, _ in bl.parts}
    tmp = cores[bl.home].tmp
    home_tmp = cols(tmp, 0, width) if tmp is not None else None

    def partial(core: int, part: tuple[PlacedTile, ...], acc: View) -> None:
        _tiles(b, core, cores[core], sorted(part, key=lambda s: s.k0), acc, w, name)

    return block_sum(b, bl, accs, home_tmp, partial)


def _tiles(
    b: ProgramBuilder,
    core: int,
    cb: _Core,
    part: Sequence[PlacedTile],
    acc: View,
    w: View,
    name: str,
) -> None:
    """acc = xp @ W over the core's tiles of one block, each gathered by its index rows; the
    gather of the next tile is emitted before the current tile's write (depth-2 pipeline)."""
    n0 = part[0].n0
    staged = _gather(b, core, cb, part[0], w, 0)
    for i, s in enumerate(part):
        if b.hook is not None:  # the streaming plan's phase of this tile is in use
            b.hook.need(core, (name, s.k0, s.k1, s.n0, s.n1))
        nxt = _gather(b, core, cb, part[i + 1], w, i + 1) if i + 1 < len(part) else None
        index = sub(cb.idx, s.k0, s.k1, 0, 1)
        window = tile_window(s)
        b.mload_masked(core, s.macro, s.r0, s.c0, staged, index)
        op = "mvm.acc" if i > 0 else "mvm"
        b.emit(core, op, cols(acc, s.n0 - n0, s.n1 - n0), cols(cb.xp, s.k0, s.k1), window)
        if nxt is not None:
            staged = nxt


def _gather(b: ProgramBuilder, core: int, cb: _Core, s: PlacedTile, w: View, turn: int) -> View:
    """The rows of W the tile's packed index names, into a staging buffer."""
    k = w.rows
    stage = View("sp", cb.staging[turn % 2].addr, "i8", s.k1 - s.k0, s.n1 - s.n0)
    b.emit(core, "gather.m", stage, sub(w, 0, k, s.n0, s.n1), sub(cb.idx, s.k0, s.k1, 0, 1))
    return stage
