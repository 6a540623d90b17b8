"""Lowering of `linear` (static int8 weights) and `matmul` (two run-time operands).

Integer steps (cimc/quant/recipes.py): acc = x @ W (+ bias) in int32, y = REQ(acc, M, s)
per output channel. On the machine the weight is cut into macro tiles (rows = reduction,
columns = outputs; edge tiles are smaller); every tile of one output column block adds
into int32 accumulators with `mvm.acc` (two's-complement addition is associative, so
any tile order gives the untiled sum; two chains when a core has room, see
linear_feed.mvm_chains). Tiles of one column block placed on other cores compute partial
sums there and `send` them to the block's home core (one of the block's cores, spread so
that blocks sharing cores do not share a home), which adds them, adds the bias and
requantizes.

x reaches the cores through linear_feed.load_x (one load per K span, forwarded over the
NoC). A tile is loaded with `mload` before its first MVM (all of a core's tiles up front
when they stay resident); the builder remembers what each macro window holds, so a
resident tile is not reloaded and a macro shared by several tiles (more tiles than
macros) is simply rewritten in program order. With one pass over all tokens the output
blocks stay in their home cores' scratchpads for an element-wise consumer (kept_rows.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from cimc.backend.builder.alloc import chunks, cols, sub
from cimc.backend.builder.asm import ProgramBuilder, Scratch
from cimc.backend.lower import kept_rows
from cimc.backend.lower.common import (
    SLACK,
    ReqConsts,
    check_shape,
    emit_req,
    req_consts,
    sp_too_small,
)
from cimc.backend.lower.linear_feed import CoreBufs, load_x, mvm_chains
from cimc.backend.lower.linear_groups import GroupRows, mvm_groups
from cimc.backend.lower.linear_place import k_groups
from cimc.backend.lower.tiles import (  # re-exported: the engine is part of this API
    PlacedTile,
    TileKey,
    TileLoader,
    WeightRef,
    auto_split,
    image_views,
    mvm_tiles,
    place_tiles,
    slots_from_placement,
    tile_window,
    windows_overlap,
)
from cimc.errors import CimcError
from cimc.machine.kernels import pack_int4
from cimc.machine.program import DTYPE_BYTES, Space, View
from cimc.quant.plans import LinearPlan, MatmulPlan

__all__ = [
    "TileKey",
    "TileLoader",
    "PlacedTile",
    "WeightRef",
    "auto_split",
    "image_views",
    "lower_linear",
    "lower_matmul",
    "mvm_tiles",
    "place_tiles",
    "preload_linear",
    "slots_from_placement",
]


@dataclass(frozen=True)
class ColumnBlock:
    n0: int
    n1: int
    home: int
    parts: tuple[tuple[int, tuple[PlacedTile, ...]], ...]  # (core, its slots), home last


def column_blocks(
    slots: Sequence[PlacedTile], k: int, n: int, loc: str | None
) -> list[ColumnBlock]:
    by_cols: dict[tuple[int, int], list[PlacedTile]] = {}
    for s in slots:
        by_cols.setdefault((s.n0, s.n1), []).append(s)
    blocks, covered = [], 0
    homes: dict[int, int] = {}  # blocks each core is home of so far
    for (n0, n1), group in sorted(by_cols.items()):
        group.sort(key=lambda s: (s.k0, s.core))
        if n0 != covered or [(s.k0, s.k1) for s in group] != _cover(group, k):
            raise CimcError(f"tile slots do not cover weight columns {n0}:{n1} exactly", loc)
        covered = n1
        # Homes spread over the block's cores: a home receives and adds every partner's
        # partial sums, so blocks that share cores (a K split) must not share one home.
        home = min(group, key=lambda s: homes.get(s.core, 0)).core
        homes[home] = homes.get(home, 0) + 1
        cores = sorted({s.core for s in group} - {home}) + [home]
        parts = tuple((c, tuple(s for s in group if s.core == c)) for c in cores)
        blocks.append(ColumnBlock(n0, n1, home, parts))
    if covered != n:
        raise CimcError(f"tile slots cover {covered} of {n} output columns", loc)
    return blocks


def _cover(group: Sequence[PlacedTile], k: int) -> list[tuple[int, int]]:
    """The K ranges the group must have: consecutive from 0 to k (as the group has them)."""
    out, at = [], 0
    for s in group:
        out.append((at, s.k1) if s.k0 == at else (-1, -1))
        at = s.k1
    return out if at == k else []


def _k_span(slots: Sequence[PlacedTile], core: int) -> tuple[int, int]:
    mine = [s for s in slots if s.core == core]
    return min(s.k0 for s in mine), max(s.k1 for s in mine)


def lower_linear(
    b: ProgramBuilder,
    x: View,
    y: View,
    plan: LinearPlan,
    slots: Sequence[PlacedTile] | None = None,
    split: str = "auto",
    weight_space: Space = "dram",
    name: str | None = None,
    max_tokens: int | None = None,
    weight_image: Mapping[TileKey, View] | None = None,
    copy: int = 0,
) -> None:
    """y[T x N] = REQ(x[T x K] @ W + bias) with x, y in gb/dram. `slots` place the tiles
    (default `place_tiles(split)`); `max_tokens` caps the token rows per chunk;
    `weight_image` takes every tile from its own view (see `image_views`) instead of a
    `NAME.w` constant: tiles already in gb are written into the macros without staging;
    `copy` > 0: the slots are a duplicate copy of the layer (linear_copies.py), whose
    tiles are keyed apart from the original's (the prefetcher loads only copy 0)."""
    k, n = plan.weight.shape
    check_shape(x, (x.rows, k), "linear input", b.loc)
    check_shape(y, (x.rows, n), "linear output", b.loc)
    name = name or b.fresh_name("linear")
    bits = plan.weight_bits
    w = None if weight_image else b.const(f"{name}.w", weight_bytes(plan), "i8", weight_space)
    if slots is None and split == "auto" and auto_split(b, x, n) == "k":
        slots = k_groups(b, x.rows, k, n, bits)
    if split == "auto":
        split = auto_split(b, x, n)
    bias = b.const(f"{name}.b", plan.bias.reshape(1, n), "i32")
    rc = req_consts(b, name, plan.requant, n)
    slots = tuple(slots) if slots is not None else place_tiles(b, k, n, split=split, bits=bits)
    groups = None
    if plan.group_size > 0:
        groups = GroupRows(plan.group_size, b.const(f"{name}.gm", plan.group_mult, "i32"))
    _product(
        b,
        x,
        y,
        WeightRef(w, key=name if copy == 0 else (name, copy), image=weight_image),
        slots,
        lambda sc, acc, n0, dst: bias_requant(b, sc, acc, n0, bias, rc, y, dst),
        max_tokens,
        groups,
    )


def preload_linear(
    b: ProgramBuilder,
    plan: LinearPlan,
    name: str,
    slots: Sequence[PlacedTile] | None = None,
    split: str = "n",
    weight_space: Space = "dram",
) -> None:
    """Write a linear layer's tiles into their macros now (e.g. while the previous layer
    computes); a later `lower_linear` with the same name and slots finds them resident."""
    k, n = plan.weight.shape
    w = WeightRef(b.const(f"{name}.w", weight_bytes(plan), "i8", weight_space), key=name)
    bits = plan.weight_bits
    slots = tuple(slots) if slots is not None else place_tiles(b, k, n, split=split, bits=bits)
    for core in sorted({s.core for s in slots}):
        mine = [s for s in slots if s.core == core]
        stage = [b.alloc(core, "i8", b.arch.macro.rows, b.arch.macro.cols) for _ in range(2)]
        loader = TileLoader(b, core, w, mine, stage)
        for s in mine:
            loader.ensure(s)
        b.free(core, *stage)


def weight_bytes(plan: LinearPlan) -> np.ndarray:
    """The weight constant as the macros take it: int4 codes packed two a byte."""
    return pack_int4(plan.weight) if plan.weight_bits == 4 else plan.weight


def lower_matmul(
    b: ProgramBuilder,
    a: View,
    bm: View,
    y: View,
    plan: MatmulPlan,
    slots: Sequence[PlacedTile] | None = None,
    split: str = "auto",
    name: str | None = None,
) -> None:
    """y = REQ(a @ bm) with both operands int8 run-time data in gb/dram (bm written into
    the macros at run time)."""
    k, n = bm.shape
    check_shape(a, (a.rows, k), "matmul lhs", b.loc)
    check_shape(y, (a.rows, n), "matmul output", b.loc)
    rc = req_consts(b, name or b.fresh_name("matmul"), plan.requant, n)
    if split == "auto":
        split = auto_split(b, a, n)
    slots = tuple(slots) if slots is not None else place_tiles(b, k, n, split=split)
    _product(
        b,
        a,
        y,
        WeightRef(bm),
        slots,
        lambda sc, acc, n0, dst: bias_requant(b, sc, acc, n0, None, rc, y, dst),
    )


Finish = Callable[[Scratch, View, int, View | None], View]


def bias_requant(
    b: ProgramBuilder,
    sc: Scratch,
    acc: View,
    n0: int,
    bias: View | None,
    rc: ReqConsts,
    y: View,
    dst: View | None = None,
) -> View:
    """Output codes of one column block: REQ(acc + bias) into `dst` or a new sp buffer."""
    if bias is not None:
        bb = sc("i32", 1, acc.cols)
        b.emit(sc.core, "dma", bb, cols(bias, n0, n0 + acc.cols))
        b.emit(sc.core, "add", acc, acc, bb)
    out = dst if dst is not None else sc(y.dtype, acc.rows, acc.cols)
    emit_req(b, sc, out, acc, rc, n0)
    return out


def _token_chunks(
    b: ProgramBuilder,
    slots: Sequence[PlacedTile],
    blocks: Sequence[ColumnBlock],
    x: View,
    y: View,
    grouped: bool = False,
) -> tuple[int, int, int]:
    """(x rows held at once, accumulator rows per MVM pass, rows per epilogue pass).
    Holding every token of x lets a layer whose tiles do not all fit the macros load each
    tile once per block; the accumulators then take the scratchpad that is left. When
    they cannot hold every token with their output codes but can without them, the
    epilogue goes in smaller passes (`_stationary_rows`): a tile that its macro cannot
    keep is then written once and every token streams through it, where accumulator
    passes would write it once per pass."""
    widest = max(bl.n1 - bl.n0 for bl in blocks)
    fixed = 2 * b.arch.macro.rows * b.arch.macro.cols + widest * 16 + 8 * SLACK
    need = []
    for core in sorted({s.core for s in slots}):
        lo, hi = _k_span(slots, core)
        partners = any(bl.home == core and len(bl.parts) > 1 for bl in blocks)
        per_acc = widest * (4 + 4 * partners + 4 * grouped + DTYPE_BYTES[y.dtype])
        need.append((hi - lo, per_acc, b.sp_largest_free(core) - fixed))
    t = x.rows
    if all(t * (xr + ar) <= room for xr, ar, room in need):
        return t, t, t
    epilogue = _stationary_rows(slots, blocks, t, widest, y, need)
    if epilogue:
        return t, t, epilogue
    if all(t * xr <= room * 3 // 4 for xr, ar, room in need):
        ta = max(1, min((room - t * xr) // ar for xr, ar, room in need))
        return t, ta, ta
    tc = min(room // (xr + ar) for xr, ar, room in need)
    if tc < 1:
        short = max(xr + ar - room for xr, ar, room in need)
        raise sp_too_small(b, "one token of this matmul", short)
    return tc, tc, tc


def _stationary_rows(
    slots: Sequence[PlacedTile],
    blocks: Sequence[ColumnBlock],
    t: int,
    widest: int,
    y: View,
    need: Sequence[tuple[int, int, int]],
) -> int:
    """Epilogue rows when every token's x and int32 accumulators (partner sums included)
    fit but not their output codes too, and the tiles evict each other (else passes
    reload nothing); else 0."""
    if _all_resident(slots):
        return 0
    per_row = widest * DTYPE_BYTES[y.dtype]
    rows = min((room - t * (xr + ar - per_row)) // per_row for xr, ar, room in need)
    return min(rows, t) if rows >= 1 else 0


def _all_resident(slots: Sequence[PlacedTile]) -> bool:
    """Do the slots occupy disjoint macro windows (nothing evicted, loaded once)?"""
    refs = [(s.core, tile_window(s)) for s in slots]
    return not any(
        c == d and windows_overlap(a, e) for i, (c, a) in enumerate(refs) for d, e in refs[i + 1 :]
    )


def _blocks_outer(
    slots: Sequence[PlacedTile], blocks: Sequence[ColumnBlock], x: View, runs: int
) -> bool:
    """Loop order by the bytes each moves: chunk-outer loads x once but reloads tiles that
    evict each other once per token chunk; block-outer reloads x once per column block but
    a block whose tiles all stay resident is loaded once."""
    if runs == 1 or _all_resident(slots):
        return False
    area = sum(s.tile.cells for s in slots)
    by_block = x.rows * x.cols * len(blocks)
    for bl in blocks:
        part = [s for _, p in bl.parts for s in p]
        cells = sum(s.tile.cells for s in part)
        by_block += cells * (1 if _all_resident(part) else runs)
    return by_block < area * runs + x.rows * x.cols


def _product(
    b: ProgramBuilder,
    x: View,
    y: View,
    w: WeightRef,
    slots: Sequence[PlacedTile],
    finish: Finish,
    max_tokens: int | None = None,
    groups: GroupRows | None = None,
) -> None:
    """The shared loop over token chunks and column blocks (order by `_blocks_outer`);
    partial sums of a block are reduced at its home core; `groups`: group-wise scales."""
    blocks = column_blocks(slots, x.cols, y.cols, b.loc)
    widest = max(bl.n1 - bl.n0 for bl in blocks)
    tx, ta, te = _token_chunks(b, slots, blocks, x, y, grouped=groups is not None)
    tx, ta = min(tx, max_tokens or tx), min(ta, max_tokens or ta)
    te = min(te, ta)
    runs = chunks(x.rows, tx)
    steps = [(bl, run) for run in runs for bl in blocks]
    by_block = _blocks_outer(slots, blocks, x, len(runs))
    if by_block:
        steps = [(bl, run) for bl in blocks for run in runs]
    bufs = {}
    for core in sorted({s.core for s in slots}):
        lo, hi = _k_span(slots, core)
        partners = any(bl.home == core and len(bl.parts) > 1 for bl in blocks)
        order = [
            s
            for bl, (t0, t1) in steps
            for _ in chunks(t1 - t0, ta)
            for c, part in bl.parts
            if c == core
            for s in part
        ]
        stage = [b.alloc(core, "i8", b.arch.macro.rows, b.arch.macro.cols) for _ in range(2)]
        bufs[core] = CoreBufs(
            lo,
            hi,
            b.alloc(core, "i8", tx, hi - lo),
            b.alloc(core, "i32", ta, widest),
            b.alloc(core, "i32", ta, widest) if partners else None,
            TileLoader(b, core, w, order, stage),
        )
        if groups is not None:  # one chain: each window's sum is scaled, then added
            gtmp = b.alloc(core, "i32", ta, widest)
            bufs[core] = replace(bufs[core], groups=groups, gtmp=gtmp)
            continue
        # A second accumulator only from room left over: the epilogue (bias, output
        # codes, requant constants) still needs its buffers after it.
        chained = any(len(part) > 1 for bl in blocks for c, part in bl.parts if c == core)
        epilogue = ta * widest * (4 + 8) + widest * 16 + 8 * SLACK
        if chained and b.sp_largest_free(core) >= ta * widest * 4 + epilogue:
            bufs[core] = replace(bufs[core], acc2=b.alloc(core, "i32", ta, widest))
    # Tiles that all stay resident and are used in one run are written up front, so the
    # weight DMAs do not wait for x (see linear_feed.load_x). Not under weight streaming:
    # the prefetcher (b.hook) orders those loads itself, and writing a layer's tiles out
    # of its order makes it load some twice.
    preload = len(runs) == 1 and not by_block and _all_resident(slots) and b.hook is None
    loaded: tuple[int, int] | None = None
    # One pass over all tokens: the output blocks can stay on their home cores for an
    # element-wise consumer (cimc/backend/lower/kept_rows.py).
    whole = len(runs) == 1 and te >= x.rows
    kept: dict[tuple[int, int, int], View] | None = {} if whole else None
    margin = ta * widest * 12 + widest * 16 + 8 * SLACK  # the epilogue's own buffers
    for bl, (t0, t1) in steps:
        if (t0, t1) != loaded or by_block:  # x rows of this run into every core
            need = [c for c in bufs if not by_block or c in dict(bl.parts)]
            idle = [c for c in b.cores if c not in bufs]
            load_x(b, x, (t0, t1), {c: bufs[c] for c in need}, preload and loaded is None, idle)
            loaded = (t0, t1)
        for s0, s1 in chunks(t1 - t0, ta):
            home_acc = _block(b, bl, bufs, (s0, s1))
            kept = _keep_block(b, kept, bl, y, margin)
            dst = kept.get((bl.home, bl.n0, bl.n1)) if kept is not None else None
            for e0, e1 in chunks(s1 - s0, te):
                part = home_acc if (e0, e1) == (0, s1 - s0) else sub(home_acc, e0, e1)
                with b.scratch(bl.home) as sc:
                    out = finish(sc, part, bl.n0, dst)
                    rows = (t0 + s0 + e0, t0 + s0 + e1)
                    b.emit(bl.home, "dma", sub(y, *rows, bl.n0, bl.n1), out)
    for core, cb in bufs.items():
        extra = [v for v in (cb.tmp, cb.acc2, cb.gtmp) if v is not None]
        b.free(core, cb.xs, cb.acc, *extra, *cb.loader.staging)
    if kept:
        kept_rows.keep(b, y, kept, rows=False)


def _keep_block(
    b: ProgramBuilder,
    kept: dict[tuple[int, int, int], View] | None,
    bl: ColumnBlock,
    y: View,
    margin: int,
) -> dict[tuple[int, int, int], View] | None:
    """A buffer on the block's home for its output codes, kept after the layer; None
    (and nothing kept) once one does not fit the budget or the room left."""
    if kept is None:
        return None
    nbytes = y.rows * (bl.n1 - bl.n0) * y.elem_bytes
    mine = sum(v.nbytes for (c, _, _), v in kept.items() if c == bl.home)
    if mine + nbytes > kept_rows.budget(b) or b.sp_largest_free(bl.home) < nbytes + margin:
        for (core, _, _), view in kept.items():
            b.free(core, view)
        return None
    kept[(bl.home, bl.n0, bl.n1)] = b.alloc(bl.home, y.dtype, y.rows, bl.n1 - bl.n0)
    return kept


def block_sum(
    b: ProgramBuilder,
    bl: ColumnBlock,
    accs: Mapping[int, View],
    home_tmp: View | None,
    partial: Callable[[int, tuple[PlacedTile, ...], View], None],
) -> View:
    """The block's sum on its home core: home's partial sum first, then each partner's
    (`partial(core, tiles, acc)` writes it into that core's `accs` view), sent home into
    `home_tmp` and added there; returns the home accumulator."""
    home_acc = accs[bl.home]
    for core, part in (bl.parts[-1], *bl.parts[:-1]):
        partial(core, part, accs[core])
        if core != bl.home:
            assert home_tmp is not None
            b.transfer(core, accs[core], bl.home, home_tmp)
            b.emit(bl.home, "add", home_acc, home_acc, home_tmp)
    return home_acc


def _block(
    b: ProgramBuilder, bl: ColumnBlock, bufs: dict[int, CoreBufs], rows: tuple[int, int]
) -> View:
    """The block's sum over held x rows s0:s1 (see `block_sum`)."""
    width, nt = bl.n1 - bl.n0, rows[1] - rows[0]

    def partial(core: int, part: tuple[PlacedTile, ...], a: View) -> None:
        cb = bufs[core]
        a2 = sub(cb.acc2, 0, nt, 0, width) if cb.acc2 is not None else None
        if cb.groups is not None and cb.gtmp is not None:
            tmp = sub(cb.gtmp, 0, nt, 0, width)
            mvm_groups(b, a, tmp, sub(cb.xs, *rows), cb.lo, part, cb.loader, cb.groups)
        else:
            mvm_chains(b, a, a2, sub(cb.xs, *rows), cb.lo, part, cb.loader)

    accs = {core: sub(bufs[core].acc, 0, nt, 0, width) for core, _ in bl.parts}
    home_tmp = bufs[bl.home].tmp
    tmp = sub(home_tmp, 0, nt, 0, width) if home_tmp is not None else None
    return block_sum(b, bl, accs, tmp, partial)
