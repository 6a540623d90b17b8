"""Lowering of a masked `linear` (`q.linear.masked`, `--sparsity predict`): only the weight
columns of the neurons the predictor names are loaded.

Integer steps: y[:, j] = REQ(x @ W[:, j] + bias[j]) where mask[:, j] != 0, else 0
(cimc/quant/predictor.py). The neuron-major constant `NAME.rows` ([N x K], row j = column
j of W: one contiguous record per neuron) is where the columns come from. Every core of
the layer:
1. loads x [T x K] and the mask [T x N]; a neuron is wanted when some token's mask names
   it: idx[j] = j, else -1 (`sel` over the mask, reduced over tokens with `rmax`, and the
   constant `NAME.neurons` = 0..N-1);
2. for each of its tiles (rows k0:k1, columns n0:n1) gathers the records idx[n0:n1]
   restricted to k0:k1 (`gather.m`: entries -1 read nothing) and writes them into the
   tile's macro window as its columns (`mload.t.m`: only the named columns), then
   accumulates x[:, k0:k1] @ window. A column no entry named holds whatever the window
   held: its sums are garbage, and the mask below discards them.
Partial sums go to the block's home core as for a dense linear; the home adds the bias,
requantizes and keeps the codes where the mask is non-zero (`sel`), 0 elsewhere, exactly
the golden's `where(mask != 0, linear(x), 0)`. Whatever the data, the program computes what
the golden does: masked columns are never read.

With a window (tiles in flash, cimc/backend/plan/window.py) `NAME.rows` stays in flash and
the layer's first core copies the records of the wanted neurons that the DRAM cache does not
hold into it first (window_fill.py: the mask plays the part of the sparse layer's input);
the tiles gather from the cache. Row-column bundling: when the FFN's down-projection is
cached too (plan-window's `bundles`), record j holds column j of W and then row j of the
down-projection's weight ([N x (K + D)]): one `dma.m` of whole records brings both, one
cache holds both, and the down-projection gathers its rows from the records' second part
(it needs no fill: its active neurons are among the predicted ones, in the cache now).
When the cores' buffers do not fit for all tokens at once, the layer runs in row chunks
(without a fill). When the leader has no room for the fill (many tokens, as
in a prefill), the tiles gather straight from flash and the cache is left as it is (what it
holds stays valid: its ages say so). A masked layer that stays in the weight image (its tiles
partly in flash without a window, int4 weights, or no plan-sparsity `predict`) is lowered
dense and masked afterwards (`masked_dense`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cimc.backend.builder.alloc import cols, rows, sub
from cimc.backend.builder.asm import ProgramBuilder, Scratch
from cimc.backend.lower.common import SLACK, ReqConsts, req_consts
from cimc.backend.lower.elementwise import rowwise
from cimc.backend.lower.linear import (
    ColumnBlock,
    bias_requant,
    block_sum,
    column_blocks,
    lower_linear,
)
from cimc.backend.lower.sparse_linear import index_dtype
from cimc.backend.lower.tiles import PlacedTile, TileKey, tile_window
from cimc.backend.lower.window_fill import (
    WindowCache,
    declare_cache,
    fill_bytes,
    fill_cache,
    publish,
)
from cimc.errors import CimcError
from cimc.machine.program import DTYPE_BYTES, Space, View
from cimc.quant.plans import LinearPlan


@dataclass(frozen=True)
class _Core:
    """One core's buffers: inputs, mask, wanted-neuron index, accumulators, staging."""

    xs: View  # [T x K]
    mask: View  # [T x N]
    idx: View  # [N x 1]: j where some token wants neuron j, else -1
    acc: View  # [T x widest] int32
    tmp: View | None  # partner partial sums received by a home core
    staging: tuple[View, View]


def lower_predicted_linear(
    b: ProgramBuilder,
    x: View,
    mask: View,
    y: View,
    plan: LinearPlan,
    slots: Sequence[PlacedTile],
    name: str,
    window: int | None = None,
    down: LinearPlan | None = None,
) -> tuple[View, View] | None:
    """y = REQ(x @ W + bias) where mask != 0, else 0, loading only the wanted columns:
    from DRAM, or from flash through a DRAM cache of the neurons of the last `window`
    runs. With `down` (a window and a bundled FFN) each neuron's record holds its down
    row after its up column: returns the down-projection's part of the flash constant and
    of the cache."""
    k, n = plan.weight.shape
    space: Space = "dram" if window is None else "flash"
    records = np.ascontiguousarray(plan.weight.T)
    if down is not None:
        records = np.ascontiguousarray(np.concatenate([records, down.weight], axis=1))
    w = b.const(f"{name}.rows", records, "i8", space)  # the cache is `.rows.cache`
    wc = declare_cache(b, name, w, window) if window is not None else None

    dtype = index_dtype(n)
    neurons = b.const(f"{name}.neurons", np.arange(n).reshape(n, 1), dtype)
    blocks = column_blocks(slots, k, n, b.loc)
    widest = max(bl.n1 - bl.n0 for bl in blocks)
    order = sorted({s.core for s in slots})
    step = _rows_that_fit(b, x.rows, k, n, widest, blocks, order)
    if step == 0:
        raise CimcError(
            f"%{name}: the predicted layer's buffers for one token do not fit the "
            "scratchpad of its cores; use --sparsity exact",
            b.loc,
        )
    leader_home = _is_home(order[0], blocks)
    if wc is not None and (
        step < x.rows
        or _need(b, x.rows, k, n, widest, leader_home, True) > b.sp_largest_free(order[0])
    ):
        wc = None  # no room for the fill (many tokens): gather from flash, cache untouched
    parts = None
    if down is not None:  # the down rows come from where the up columns came from
        source = wc.cache if wc is not None else w
        parts = (sub(w, 0, n, k, w.cols), sub(source, 0, n, k, w.cols))
    consts = _Consts(
        w if wc is None else wc.cache,
        neurons,
        b.const(f"{name}.b", plan.bias.reshape(1, n), "i32"),
        req_consts(b, name, plan.requant, n),
    )
    fill = _filler(b, wc, order) if wc is not None else None
    for r0 in range(0, x.rows, step):  # row chunks when the scratchpads are too small
        r1 = min(x.rows, r0 + step)
        views = (rows(x, r0, r1), rows(mask, r0, r1), rows(y, r0, r1))
        _product(b, views, consts, blocks, widest, order, name, fill)
    return parts


@dataclass(frozen=True)
class _Consts:
    table: View  # the neuron-major records to gather from (constant or cache)
    neurons: View  # 0..N-1
    bias: View
    rc: ReqConsts


def _rows_that_fit(
    b: ProgramBuilder,
    t: int,
    k: int,
    n: int,
    widest: int,
    blocks: Sequence[ColumnBlock],
    order: Sequence[int],
) -> int:
    """The most token rows (up to t) whose buffers fit every core's scratchpad (0: none)."""
    for r in range(t, 0, -1):
        if all(
            _need(b, r, k, n, widest, _is_home(c, blocks)) <= b.sp_largest_free(c) for c in order
        ):
            return r
    return 0


def _product(
    b: ProgramBuilder,
    views: tuple[View, View, View],
    consts: _Consts,
    blocks: Sequence[ColumnBlock],
    widest: int,
    order: Sequence[int],
    name: str,
    fill: Callable[[View], None] | None,
) -> None:
    """y = the masked layer over the rows of x and the mask in `views`."""
    x, mask, y = views
    cores = {  # the leader (first core) first: it fills the cache
        c: _prepare(
            b,
            c,
            x,
            mask,
            consts.neurons,
            widest,
            _is_home(c, blocks),
            fill if c == order[0] else None,
        )  # fmt: skip
        for c in order
    }
    for bl in blocks:
        acc = _block(b, bl, cores, consts.table, name)
        home = cores[bl.home]
        with b.scratch(bl.home) as sc:
            out = bias_requant(b, sc, acc, bl.n0, consts.bias, consts.rc, y)
            b.emit(bl.home, "sel", out, cols(home.mask, bl.n0, bl.n1), out, 0)
            b.emit(bl.home, "dma", cols(y, bl.n0, bl.n1), out)
    for core, cb in cores.items():
        extra = (cb.tmp,) if cb.tmp is not None else ()
        b.free(core, cb.xs, cb.mask, cb.idx, cb.acc, *extra, *cb.staging)


def masked_dense(
    b: ProgramBuilder,
    x: View,
    mask: View,
    y: View,
    plan: LinearPlan,
    slots: Sequence[PlacedTile],
    name: str,
    image: Mapping[TileKey, View],
) -> None:
    """The dense layer from the weight image, then y = mask != 0 ? y : 0 in place."""
    lower_linear(b, x, y, plan, slots=slots, name=name, weight_image=image)

    def body(sc: Scratch, ins: list[View], out: View) -> None:
        b.emit(sc.core, "sel", out, ins[1], ins[0], 0)

    rowwise(b, [y, mask], y, body, 0)


def _is_home(core: int, blocks: Sequence[ColumnBlock]) -> bool:
    return any(bl.home == core and len(bl.parts) > 1 for bl in blocks)


def _need(
    b: ProgramBuilder, t: int, k: int, n: int, widest: int, home: bool, fills: bool = False
) -> int:
    """Scratchpad bytes of one core's buffers and of the epilogue (and of the leader's
    cache fill, beside x and the mask)."""
    m = b.arch.macro
    index = n * DTYPE_BYTES[index_dtype(n)]
    setup = t * n + 2 * index + (n * t + n if t > 1 else 0)  # mask, idx + neurons, any
    acc = t * widest * 4 * (2 if home else 1)
    epilogue = t * widest * (4 + 8) + widest * 16 + 8 * SLACK
    need = t * k + setup + acc + 2 * m.rows * m.cols + epilogue
    return max(need, t * k + t * n + fill_bytes(t, n)) if fills else need


def _filler(b: ProgramBuilder, wc: WindowCache, order: list[int]) -> Callable[[View], None]:
    """The leader's cache fill from its copy of the mask (a neuron is wanted where some
    token's mask is non-zero), then the other cores may read the cache."""

    def fill(ms: View) -> None:
        token = fill_cache(b, order[0], ms, wc, index_dtype(ms.cols))
        publish(b, order[0], token, order)

    return fill


def _prepare(
    b: ProgramBuilder,
    core: int,
    x: View,
    mask: View,
    neurons: View,
    widest: int,
    home: bool,
    fill: Callable[[View], None] | None = None,
) -> _Core:
    """x and the mask into the core; the index of the neurons some token wants; `fill`
    (the leader of a windowed layer) fills the cache from the mask first."""
    t, k = x.shape
    n = mask.cols
    xs = b.alloc(core, "i8", t, k)
    b.emit(core, "dma", xs, x)
    ms = b.alloc(core, mask.dtype, t, n)
    b.emit(core, "dma", ms, mask)
    if fill is not None:
        fill(ms)
    ids = b.alloc(core, neurons.dtype, n, 1)
    b.emit(core, "dma", ids, neurons)
    idx = b.alloc(core, neurons.dtype, n, 1)
    if t == 1:  # one token: the mask row is the column (same bytes as n x 1)
        b.emit(core, "sel", idx, View("sp", ms.addr, ms.dtype, n, 1), ids, -1)
    else:
        mt, wanted = b.alloc(core, ms.dtype, n, t), b.alloc(core, ms.dtype, n, 1)
        b.emit(core, "transpose", mt, ms)
        b.emit(core, "rmax", wanted, mt)  # mask codes are 0/1: max != 0 <=> some token
        b.emit(core, "sel", idx, wanted, ids, -1)
        b.free(core, mt, wanted)
    b.free(core, ids)
    m = b.arch.macro
    acc = b.alloc(core, "i32", t, widest)
    tmp = b.alloc(core, "i32", t, widest) if home else None
    staging = (b.alloc(core, "i8", m.cols, m.rows), b.alloc(core, "i8", m.cols, m.rows))
    return _Core(xs, ms, idx, acc, tmp, staging)


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
    """acc = x @ W over the core's tiles of one block, each tile's wanted columns gathered
    (the next tile's gather before the current tile's write: depth-2 pipeline)."""
    n0 = part[0].n0
    staged = _gather(b, core, cb, part[0], w, 0)
    for i, s in enumerate(part):
        if b.hook is not None:  # the streaming plan's phase of this tile is in use
            b.hook.need(core, (name, s.k0, s.k1, s.n0, s.n1))
        nxt = _gather(b, core, cb, part[i + 1], w, i + 1) if i + 1 < len(part) else None
        window = tile_window(s)
        index = sub(cb.idx, s.n0, s.n1, 0, 1)
        b.mload_masked(core, s.macro, s.r0, s.c0, staged, index, transpose=True)
        op = "mvm.acc" if i > 0 else "mvm"
        b.emit(core, op, cols(acc, s.n0 - n0, s.n1 - n0), cols(cb.xs, s.k0, s.k1), window)
        if nxt is not None:
            staged = nxt


def _gather(b: ProgramBuilder, core: int, cb: _Core, s: PlacedTile, w: View, turn: int) -> View:
    """The wanted neurons' records of the tile (its K range) into a staging buffer."""
    stage = View("sp", cb.staging[turn % 2].addr, "i8", s.n1 - s.n0, s.k1 - s.k0)
    rows = sub(w, 0, w.rows, s.k0, s.k1)
    b.emit(core, "gather.m", stage, rows, sub(cb.idx, s.n0, s.n1, 0, 1))
    return stage
