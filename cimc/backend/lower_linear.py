"""Lowering of `linear` (static int8 weights) and `matmul` (two run-time operands).

Integer steps (cimc/quant/recipes.py): acc = x @ W (+ bias) in int32, y = REQ(acc, M, s)
per output channel. On the machine the weight is cut into macro tiles (rows = reduction,
columns = outputs; edge tiles are smaller); every tile of one output column block adds
into one int32 accumulator with `mvm.acc` (two's-complement addition is associative, so
any tile order gives the untiled sum). Tiles of one column block placed on other cores
compute partial sums there and `send` them to the block's home core (the core of its
first reduction tile), which adds them, adds the bias and requantizes.

A tile is loaded with `mload` right before its first MVM; the builder remembers what each
macro window holds, so a resident tile is not reloaded and a macro shared by several
tiles (more tiles than macros) is simply rewritten in program order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cimc.backend.asm import ProgramBuilder, Scratch
from cimc.backend.asm_alloc import chunks, cols, split_even, sub
from cimc.backend.lower_common import SLACK, ReqConsts, check_shape, emit_req, req_consts
from cimc.backend.mapping import Placement
from cimc.errors import CimcError
from cimc.machine.program import DTYPE_BYTES, MacroRef, Space, View
from cimc.quant.plans import LinearPlan, MatmulPlan


@dataclass(frozen=True)
class TileSlot:
    """Weight rows k0:k1 and columns n0:n1, held at (r0, c0) of `macro` on `core`."""

    k0: int
    k1: int
    n0: int
    n1: int
    core: int
    macro: int
    r0: int = 0
    c0: int = 0


@dataclass(frozen=True)
class WeightRef:
    """The [K x N] right operand: `view` (or, transposed, `view` is [N x K] as for K^T).

    `key` names a static weight so resident tiles are not reloaded; None means run-time
    data, loaded every time.
    """

    view: View
    transposed: bool = False
    key: object = None

    def tile(self, s: TileSlot) -> View:
        if self.transposed:
            return sub(self.view, s.n0, s.n1, s.k0, s.k1)
        return sub(self.view, s.k0, s.k1, s.n0, s.n1)


def place_tiles(
    b: ProgramBuilder, k: int, n: int, cores: Sequence[int] | None = None, split: str = "n"
) -> tuple[TileSlot, ...]:
    """A simple placement: output column blocks (split="n") or reduction blocks
    (split="k", partial sums reduced over cores) spread evenly over `cores`; each core's
    tiles take its macros round robin at window (0, 0)."""
    rows, ncols = b.arch.macro.rows, b.arch.macro.cols
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
            slots.append(TileSlot(k0, k1, n0, n1, core, count[core] % b.arch.core.macros))
            count[core] += 1
    return tuple(slots)


def slots_from_placement(placement: Placement, layer: str, copy: int = 0) -> tuple[TileSlot, ...]:
    """The tiles of `layer` (copy `copy`) as placed by cimc.backend.mapping.place."""
    return tuple(
        TileSlot(pt.tile.k0, pt.tile.k1, pt.tile.n0, pt.tile.n1, pt.core, pt.macro, pt.r0, pt.c0)
        for pt in placement.tiles
        if pt.tile.layer == layer and pt.copy == copy
    )


@dataclass
class Staging:
    """Scratchpad buffers that weight tiles pass through on their way from dram/flash to a
    macro, used in turn: the DMA of the next tile overlaps the write of this one."""

    bufs: list[View]
    turn: int = 0

    def next(self) -> View:
        self.turn = (self.turn + 1) % len(self.bufs)
        return self.bufs[self.turn]


def mvm_tiles(
    b: ProgramBuilder,
    core: int,
    acc: View,
    x: View,
    kbase: int,
    w: WeightRef,
    slots: Sequence[TileSlot],
    staging: Staging | None,
    accumulate: bool = False,
) -> None:
    """acc (+)= x[:, k0-kbase : k1-kbase] @ W[k0:k1, n0:n1] summed over `slots` (one core,
    one column block; acc columns start at the block's n0)."""
    for i, s in enumerate(slots):
        rows, ncols = s.k1 - s.k0, s.n1 - s.n0
        ref = MacroRef(s.macro, s.r0, s.r0 + rows, s.c0, s.c0 + ncols)
        key = None if w.key is None else (w.key, s.k0, s.k1, s.n0, s.n1)
        if not b.resident(core, s.macro, ref, key):
            src = w.tile(s)
            if src.space not in ("sp", "gb"):
                assert staging is not None, "weights outside sp/gb need a staging buffer"
                stage = View("sp", staging.next().addr, "i8", src.rows, src.cols)
                b.emit(core, "dma", stage, src)
                src = stage
            b.mload(core, s.macro, s.r0, s.c0, src, key, transpose=w.transposed)
        first = s.n0 - min(t.n0 for t in slots)
        dst = cols(acc, first, first + ncols)
        op = "mvm.acc" if (accumulate or i > 0) else "mvm"
        b.emit(core, op, dst, cols(x, s.k0 - kbase, s.k1 - kbase), ref)


@dataclass(frozen=True)
class _Block:
    n0: int
    n1: int
    home: int
    parts: tuple[tuple[int, tuple[TileSlot, ...]], ...]  # (core, its slots), home last


def _blocks(slots: Sequence[TileSlot], k: int, n: int, loc: str | None) -> list[_Block]:
    by_cols: dict[tuple[int, int], list[TileSlot]] = {}
    for s in slots:
        by_cols.setdefault((s.n0, s.n1), []).append(s)
    blocks, covered = [], 0
    for (n0, n1), group in sorted(by_cols.items()):
        group.sort(key=lambda s: (s.k0, s.core))
        if n0 != covered or [(s.k0, s.k1) for s in group] != _cover(group, k):
            raise CimcError(f"tile slots do not cover weight columns {n0}:{n1} exactly", loc)
        covered = n1
        home = group[0].core
        cores = sorted({s.core for s in group} - {home}) + [home]
        parts = tuple((c, tuple(s for s in group if s.core == c)) for c in cores)
        blocks.append(_Block(n0, n1, home, parts))
    if covered != n:
        raise CimcError(f"tile slots cover {covered} of {n} output columns", loc)
    return blocks


def _cover(group: Sequence[TileSlot], k: int) -> list[tuple[int, int]]:
    """The K ranges the group must have: consecutive from 0 to k (as the group has them)."""
    out, at = [], 0
    for s in group:
        out.append((at, s.k1) if s.k0 == at else (-1, -1))
        at = s.k1
    return out if at == k else []


def _k_span(slots: Sequence[TileSlot], core: int) -> tuple[int, int]:
    mine = [s for s in slots if s.core == core]
    return min(s.k0 for s in mine), max(s.k1 for s in mine)


def lower_linear(
    b: ProgramBuilder,
    x: View,
    y: View,
    plan: LinearPlan,
    slots: Sequence[TileSlot] | None = None,
    split: str = "n",
    weight_space: Space = "dram",
    name: str | None = None,
) -> None:
    """y[T x N] = REQ(x[T x K] @ W + bias) with x, y in gb/dram."""
    k, n = plan.weight.shape
    check_shape(x, (x.rows, k), "linear input", b.loc)
    check_shape(y, (x.rows, n), "linear output", b.loc)
    name = name or b.fresh_name("linear")
    w = b.const(f"{name}.w", plan.weight, "i8", weight_space)
    bias = b.const(f"{name}.b", plan.bias.reshape(1, n), "i32")
    rc = req_consts(b, name, plan.requant, n)
    slots = tuple(slots) if slots is not None else place_tiles(b, k, n, split=split)
    _product(
        b,
        x,
        y,
        WeightRef(w, key=name),
        slots,
        lambda sc, acc, n0: _bias_req(b, sc, acc, n0, bias, rc, y),
    )


def lower_matmul(
    b: ProgramBuilder,
    a: View,
    bm: View,
    y: View,
    plan: MatmulPlan,
    slots: Sequence[TileSlot] | None = None,
    split: str = "n",
    name: str | None = None,
) -> None:
    """y = REQ(a @ bm) with both operands int8 run-time data in gb/dram (bm written into
    the macros at run time)."""
    k, n = bm.shape
    check_shape(a, (a.rows, k), "matmul lhs", b.loc)
    check_shape(y, (a.rows, n), "matmul output", b.loc)
    rc = req_consts(b, name or b.fresh_name("matmul"), plan.requant, n)
    slots = tuple(slots) if slots is not None else place_tiles(b, k, n, split=split)
    _product(
        b, a, y, WeightRef(bm), slots, lambda sc, acc, n0: _bias_req(b, sc, acc, n0, None, rc, y)
    )


Finish = Callable[[Scratch, View, int], View]


def _bias_req(
    b: ProgramBuilder, sc: Scratch, acc: View, n0: int, bias: View | None, rc: ReqConsts, y: View
) -> View:
    """Output codes of one column block: REQ(acc + bias) into a new sp buffer."""
    if bias is not None:
        bb = sc("i32", 1, acc.cols)
        b.emit(sc.core, "dma", bb, cols(bias, n0, n0 + acc.cols))
        b.emit(sc.core, "add", acc, acc, bb)
    out = sc(y.dtype, acc.rows, acc.cols)
    emit_req(b, sc, out, acc, rc, n0)
    return out


@dataclass(frozen=True)
class _Bufs:
    """One core's buffers: x columns lo:hi of a token chunk, accumulators, staging."""

    lo: int
    hi: int
    xs: View
    acc: View
    tmp: View
    stage: Staging


def _token_chunk(
    b: ProgramBuilder, slots: Sequence[TileSlot], x: View, y: View, widest: int
) -> int:
    tc = x.rows
    for core in sorted({s.core for s in slots}):
        lo, hi = _k_span(slots, core)
        per_row = (hi - lo) + widest * (8 + DTYPE_BYTES[y.dtype])
        fixed = 2 * b.arch.macro.rows * b.arch.macro.cols + widest * 16 + 8 * SLACK
        tc = min(tc, (b.sp_largest_free(core) - fixed) // per_row)
    if tc < 1:
        raise CimcError("scratchpad too small for one token of this matmul", b.loc)
    return tc


def _product(
    b: ProgramBuilder, x: View, y: View, w: WeightRef, slots: Sequence[TileSlot], finish: Finish
) -> None:
    """The shared loop: token chunks x column blocks, partial sums reduced at home."""
    blocks = _blocks(slots, x.cols, y.cols, b.loc)
    widest = max(bl.n1 - bl.n0 for bl in blocks)
    tc = _token_chunk(b, slots, x, y, widest)
    bufs = {}
    for core in sorted({s.core for s in slots}):
        lo, hi = _k_span(slots, core)
        bufs[core] = _Bufs(
            lo,
            hi,
            b.alloc(core, "i8", tc, hi - lo),
            b.alloc(core, "i32", tc, widest),
            b.alloc(core, "i32", tc, widest),
            Staging([b.alloc(core, "i8", b.arch.macro.rows, b.arch.macro.cols) for _ in range(2)]),
        )
    for t0, t1 in chunks(x.rows, tc):
        for core, cb in bufs.items():
            b.emit(core, "dma", sub(cb.xs, 0, t1 - t0), sub(x, t0, t1, cb.lo, cb.hi))
        for bl in blocks:
            home_acc = _block(b, bl, bufs, t1 - t0, w)
            with b.scratch(bl.home) as sc:
                out = finish(sc, home_acc, bl.n0)
                b.emit(bl.home, "dma", sub(y, t0, t1, bl.n0, bl.n1), out)
    for core, cb in bufs.items():
        b.free(core, cb.xs, cb.acc, cb.tmp, *cb.stage.bufs)


def _block(b: ProgramBuilder, bl: _Block, bufs: dict[int, _Bufs], nt: int, w: WeightRef) -> View:
    """Home's partial sum first, then each partner's, sent home and added there; returns
    the home accumulator."""
    width = bl.n1 - bl.n0
    home_acc = sub(bufs[bl.home].acc, 0, nt, 0, width)
    tmp = sub(bufs[bl.home].tmp, 0, nt, 0, width)
    for core, part in (bl.parts[-1], *bl.parts[:-1]):
        cb = bufs[core]
        a = sub(cb.acc, 0, nt, 0, width)
        mvm_tiles(b, core, a, sub(cb.xs, 0, nt), cb.lo, w, part, cb.stage)
        if core != bl.home:
            b.transfer(core, a, bl.home, tmp)
            b.emit(bl.home, "add", home_acc, home_acc, tmp)
    return home_acc
