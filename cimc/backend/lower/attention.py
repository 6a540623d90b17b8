"""Lowering of fused attention (cimc/quant/recipes.py `attention`) with run-time operands
written into the macros.

Per batch element and kv head (GQA: query heads g*group ... g*group+group-1 share it):
    K^T tiles: `mload.t` of k[j0:j1, d0:d1] into a [d x j] window (no transpose in memory)
    V tiles:   `mload` of v[j0:j1, e0:e1]
both written once per kv head and reused by every query head of its group. Per query head
and chunk of query rows:
    acc = q @ K^T (int32, tiled over D with mvm.acc); x = REQ(acc) -> int16 logits
    allowed = causal (const) AND user mask; e = exp table product (shared with softmax)
    p' = RSHR(e * p_max, 30); S = RSUM(p'); R = DIV(out_mult << b, max(S, 1))
    acc = p' @ V: p_max = 127 is one int8 pass; p_max = 16383 splits p' = 128*hi + lo
    (hi, lo in [0, 127]) into two int8 passes combined in int64 as 128*acc_hi + acc_lo
    y = clamp(RSHR(acc * R, out_shift), lo, hi)
(batch, kv head) pairs are spread evenly over the builder's cores; each writes its own
heads' output columns, so cores never write the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cimc.backend.builder.alloc import chunks, cols, split_even, sub
from cimc.backend.builder.asm import ProgramBuilder, Scratch
from cimc.backend.lower import kept_rows
from cimc.backend.lower.common import Heads
from cimc.backend.lower.softmax import EXP_BYTES_PER_ELEMENT, ExpTables, emit_exp
from cimc.backend.lower.tiles import PlacedTile, TileLoader, WeightRef, mvm_tiles
from cimc.errors import CimcError
from cimc.machine.arch import Arch
from cimc.machine.program import View
from cimc.quant.plans import AttentionPlan
from cimc.quant.tables import EXP_FRAC_BITS

MODES = ("macro", "vector")


def _grid(
    core: int, k: int, n: int, shape: tuple[int, int], macros: Sequence[int]
) -> list[PlacedTile]:
    """Macro tiles of a [k x n] operand on `core`, taking `macros` round robin."""
    r, c = shape
    out: list[PlacedTile] = []
    for n0 in range(0, n, c):
        for k0 in range(0, k, r):
            macro = macros[len(out) % len(macros)]
            out.append(PlacedTile.at(k0, min(k, k0 + r), n0, min(n, n0 + c), core, macro))
    return out


def _blocks(slots: Sequence[PlacedTile]) -> list[list[PlacedTile]]:
    groups: dict[int, list[PlacedTile]] = {}
    for s in slots:
        groups.setdefault(s.n0, []).append(s)
    return [groups[n0] for n0 in sorted(groups)]


def _check(q: Heads, k: Heads, v: Heads, out: Heads, loc: str | None) -> None:
    ok = (
        q.batch == k.batch == v.batch == out.batch
        and k.heads == v.heads
        and q.heads % k.heads == 0
        and out.heads == q.heads
        and q.dim == k.dim
        and k.seq == v.seq
        and out.seq == q.seq
        and out.dim == v.dim
    )
    if not ok:
        raise CimcError(
            f"attention shapes disagree: q {q.batch}x{q.heads}x{q.seq}x{q.dim}, k "
            f"{k.batch}x{k.heads}x{k.seq}x{k.dim}, v {v.batch}x{v.heads}x{v.seq}x{v.dim}, "
            f"out {out.batch}x{out.heads}x{out.seq}x{out.dim}",
            loc,
        )


def _mask_consts(
    b: ProgramBuilder,
    name: str,
    plan: AttentionPlan,
    seqs: tuple[int, int],
    mask: View | None,
    batch: int,
) -> View | None:
    sq, sk = seqs
    if mask is not None and (mask.cols != sk or mask.rows not in (batch, batch * sq)):
        raise CimcError(
            f"attention mask must be {batch}x{sk} (padding) or {batch * sq}x{sk}, got "
            f"{mask.rows}x{mask.cols}",
            b.loc,
        )
    if not plan.causal:
        return None
    causal = np.tril(np.ones((sq, sk), np.int64), k=sk - sq)
    return b.const(f"{name}.causal", causal, "i8")


@dataclass(frozen=True)
class _Attn:
    """Everything one attention lowering shares between its heads."""

    b: ProgramBuilder
    name: str
    q: Heads
    k: Heads
    v: Heads
    out: Heads
    plan: AttentionPlan
    tables: ExpTables
    causal: View | None
    mask: View | None
    mode: str
    macros: list[int]
    bias: View | None = None  # i16 logit codes [Bb*Hb*Sb x Sk]: Bb 1 or B, Hb 1 or Hq, Sb 1 or Sq
    bias_shape: tuple[int, int, int] = (1, 1, 1)  # (Bb, Hb, Sb)
    call: int = 0  # ProgramBuilder.call_key of this lowering (keys its K/V tiles)


@dataclass(frozen=True)
class _KV:
    """One kv head's operands in sp, as macro tiles."""

    kt: TileLoader
    kt_slots: list[PlacedTile]
    vw: TileLoader
    v_slots: list[PlacedTile]
    vt: View | None = None  # vector mode: V^T [Dv x Sk] in sp


@dataclass(frozen=True)
class AttentionGroup:
    """The operands of some sequences' attention: queries, keys and values with their
    own sizes (a batch of sequences of different lengths is one group per sequence)."""

    q: Heads
    k: Heads
    v: Heads
    out: Heads
    mask: View | None = None
    bias: View | None = None  # i16 logit codes [Bb*Hb*Sb x Sk] (see lower_attention)
    bias_shape: tuple[int, int, int] = (1, 1, 1)


def _check_bias(g: AttentionGroup, loc: str | None) -> None:
    if g.bias is None:
        return
    bb, hb, sb = g.bias_shape
    ok = bb in (1, g.q.batch) and hb in (1, g.q.heads) and sb in (1, g.q.seq)
    if not ok or g.bias.cols != g.k.seq or g.bias.rows != bb * hb * sb:
        raise CimcError(
            f"attention bias {g.bias.rows}x{g.bias.cols} of {g.bias_shape} does not "
            f"broadcast to {g.q.batch}x{g.q.heads}x{g.q.seq}x{g.k.seq}",
            loc,
        )


def lower_attention(
    b: ProgramBuilder,
    q: Heads,
    k: Heads,
    v: Heads,
    out: Heads,
    plan: AttentionPlan,
    mask: View | None = None,
    name: str | None = None,
    mode: str = "auto",
    macros: Sequence[int] | None = None,
    bias: tuple[View, tuple[int, int, int]] | None = None,
) -> None:
    """out = attention(q, k, v) with int8 q, k, v; `mask` (i8, 1 = allowed) is [B x Sk]
    (padding, every query row) or [B*Sq x Sk]. `mode`: "macro" (K^T and V written into
    macros), "vector" (dot products on the vector unit) or "auto" (the cheaper estimate).
    `macros`: the macro indices K^T / V tiles may overwrite (default: all of them).
    `bias`: i16 logit codes [Bb*Hb*Sb x Sk] and (Bb, Hb, Sb), each 1 or B, Hq, Sq: added to
    the logits, clamped to their range, before the softmax."""
    view, shape = bias if bias is not None else (None, (1, 1, 1))
    group = AttentionGroup(q, k, v, out, mask, view, shape)
    lower_attention_groups(b, (group,), plan, name=name, mode=mode, macros=macros)


def lower_attention_groups(
    b: ProgramBuilder,
    groups: Sequence[AttentionGroup],
    plan: AttentionPlan,
    name: str | None = None,
    mode: str = "auto",
    macros: Sequence[int] | None = None,
) -> None:
    """lower_attention for several groups sharing one plan and its tables: their (batch,
    kv head) pairs are spread over the cores together, so small groups still use them all."""
    for g in groups:
        _check(g.q, g.k, g.v, g.out, b.loc)
        _check_bias(g, b.loc)
    kept_rows.release(b)  # rows or blocks an earlier op left in sp: attention wants the room
    pool = list(range(b.arch.core.macros)) if macros is None else list(macros)
    if not pool or not all(0 <= m < b.arch.core.macros for m in pool):
        raise CimcError(f"attention macros {pool} are not macros of '{b.arch.name}'", b.loc)
    free = None if macros is None else len(pool)
    modes = [
        choose_mode(b.arch, g.q, g.k, g.v, plan, free_macros=free) if mode == "auto" else mode
        for g in groups
    ]
    if any(m not in MODES for m in modes):
        raise CimcError(f"unknown attention mode {mode!r}; use one of {MODES}", b.loc)
    name = name or b.fresh_name("attn")
    tables = ExpTables.declare(b, name, plan.exp_hi, plan.exp_lo)
    ats = []
    for i, (g, m) in enumerate(zip(groups, modes, strict=True)):
        own = name if i == 0 else f"{name}.s{i}"  # K/V tiles of one group are not another's
        causal = _mask_consts(b, own, plan, (g.q.seq, g.k.seq), g.mask, g.q.batch)
        ats.append(
            _Attn(
                b,
                own,
                g.q,
                g.k,
                g.v,
                g.out,
                plan,
                tables,
                causal,
                g.mask,
                m,
                pool,
                g.bias,
                g.bias_shape,
                b.call_key(),
            )
        )
    pairs = [(at, bi, h) for at in ats for bi in range(at.q.batch) for h in range(at.k.heads)]
    for core, (a, z) in zip(b.cores, split_even(len(pairs), len(b.cores)), strict=False):
        for at, bi, h in pairs[a:z]:
            _kv_head(at, core, bi, h)


def _kv_head(at: _Attn, core: int, bi: int, g: int) -> None:
    b, sk, d, dv = at.b, at.k.seq, at.k.dim, at.v.dim
    shape, pool = (b.arch.macro.rows, b.arch.macro.cols), at.macros
    kt_slots = _grid(core, d, sk, shape, pool)
    with b.scratch(core) as sc:
        ks, vs = sc("i8", sk, d), sc("i8", sk, dv)
        b.emit(core, "dma", ks, at.k.head(bi, g))
        b.emit(core, "dma", vs, at.v.head(bi, g))
        # K/V tiles stay in the macros across query chunks and the heads of a group; the
        # call's own key keeps another run of this node (a pipeline's next micro-batch,
        # cimc/backend/lower/micro_store.py, maybe from the same buffer) from reusing them
        key = (at.name, at.call, bi, g)
        vt = None
        if at.mode == "vector":
            vt = sc("i8", dv, sk)
            b.emit(core, "transpose", vt, vs)
        kv = _KV(
            TileLoader(b, core, WeightRef(ks, transposed=True, key=(*key, "k"))),
            kt_slots,
            TileLoader(b, core, WeightRef(vs, key=(*key, "v"))),
            _grid(core, sk, dv, shape, pool[len(kt_slots) % len(pool) :] + pool),
            vt,
        )
        group = at.q.heads // at.k.heads
        per_row = sk * (EXP_BYTES_PER_ELEMENT + 24) + dv * 28 + d + 512
        qc = max(1, min(at.q.seq, (b.sp_largest_free(core) - 4096) // per_row))
        for h in range(g * group, (g + 1) * group):
            for q0, q1 in chunks(at.q.seq, qc):
                with b.scratch(core) as inner:
                    _query_rows(at, inner, kv, bi, h, (q0, q1))


def _query_rows(at: _Attn, sc: Scratch, kv: _KV, bi: int, h: int, qr: tuple[int, int]) -> None:
    b, plan, core = at.b, at.plan, sc.core
    n, sk, dv = qr[1] - qr[0], at.k.seq, at.v.dim
    qs = sc("i8", n, at.q.dim)
    b.emit(core, "dma", qs, sub(at.q.head(bi, h), *qr))
    acc = sc("i32", n, sk)
    if kv.vt is not None:
        _rows_dot(b, sc, qs, ks_of(kv), acc)
    else:
        for block in _blocks(kv.kt_slots):
            mvm_tiles(b, cols(acc, block[0].n0, block[0].n1), qs, 0, block, kv.kt)
    logits = sc("i16", n, sk)
    rq = plan.logits
    if at.bias is None:
        b.emit(core, "req", logits, acc, int(rq.mult), int(rq.shift), 0, rq.lo, rq.hi)
    else:  # logits = clamp(REQ(acc) + bias), as the recipe
        b.emit(core, "req", acc, acc, int(rq.mult), int(rq.shift), 0, rq.lo, rq.hi)
        b.emit(core, "add", acc, acc, _bias_rows(at, sc, bi, h, qr))
        b.emit(core, "req", logits, acc, 1, 0, 0, rq.lo, rq.hi)
    allowed = _allowed(at, sc, bi, qr)
    wide = sc("i64", n, sk)
    e = emit_exp(b, sc, logits, allowed, at.tables.load(b, sc), wide)
    p = sc("i8" if plan.p_max < 128 else "i16", n, sk)
    b.emit(core, "mul", wide, e, plan.p_max)
    b.emit(core, "rshr", p, wide, EXP_FRAC_BITS)
    s, rcp = sc("i64", n, 1), sc("i64", n, 1)
    b.emit(core, "rsum", s, p)
    b.emit(core, "max", s, s, 1)
    b.emit(core, "fill", rcp, plan.out_mult << plan.recip_bits)
    b.emit(core, "div", rcp, rcp, s)
    total = sc("i64", n, dv)
    if kv.vt is not None:
        _rows_dot(b, sc, p, kv.vt, total)  # exact in int64: no hi/lo split needed
    else:
        _p_times_v(b, sc, p, kv, total)
    b.emit(core, "mul", total, total, rcp)
    y = sc(at.out.view.dtype, n, dv)
    b.emit(core, "req", y, total, 1, plan.out_shift, 0, plan.lo, plan.hi)
    b.emit(core, "dma", sub(at.out.head(bi, h), *qr), y)


def _bias_rows(at: _Attn, sc: Scratch, bi: int, h: int, qr: tuple[int, int]) -> View:
    """The bias codes of head h's query rows q0:q1 in sp ([n x Sk], or [1 x Sk] when the
    bias is the same for every query row)."""
    assert at.bias is not None
    bb, hb, sb = at.bias_shape
    base = ((bi if bb > 1 else 0) * hb + (h if hb > 1 else 0)) * sb
    r0, r1 = (base + qr[0], base + qr[1]) if sb > 1 else (base, base + 1)
    rows = sc("i16", r1 - r0, at.k.seq)
    at.b.emit(sc.core, "dma", rows, sub(at.bias, r0, r1))
    return rows


def _allowed(at: _Attn, sc: Scratch, bi: int, qr: tuple[int, int]) -> View | None:
    """The i8 allowed-mask of query rows q0:q1 (None when everything is allowed)."""
    b, core, (q0, q1), sq, sk = at.b, sc.core, qr, at.q.seq, at.k.seq
    user = None
    if at.mask is not None:
        full = at.mask.rows == at.q.batch * sq  # else a padding mask: one row per batch
        part = sub(at.mask, bi * sq + q0, bi * sq + q1) if full else sub(at.mask, bi, bi + 1)
        user = sc("i8", part.rows, sk)
        b.emit(core, "dma", user, part)
    if at.causal is None:
        return user
    cm = sc("i8", q1 - q0, sk)
    b.emit(core, "dma", cm, sub(at.causal, q0, q1))
    if user is not None:
        b.emit(core, "min", cm, cm, user)
    return cm


def _p_times_v(b: ProgramBuilder, sc: Scratch, p: View, kv: _KV, total: View) -> None:
    """total (int64) = p' @ V, in one int8 pass or as 128 * (hi @ V) + (lo @ V)."""
    core, n = sc.core, p.rows
    acc = sc("i32", n, total.cols)
    passes: list[tuple[View, int]] = [(p, 1)]
    if p.dtype != "i8":
        hi, lo, t = sc("i8", n, p.cols), sc("i8", n, p.cols), sc("i16", n, p.cols)
        b.emit(core, "div", hi, p, 128)
        b.emit(core, "mul", t, hi, 128)
        b.emit(core, "sub", lo, p, t)
        passes = [(hi, 128), (lo, 1)]
    for i, (part, weight) in enumerate(passes):
        for block in _blocks(kv.v_slots):
            mvm_tiles(b, cols(acc, block[0].n0, block[0].n1), part, 0, block, kv.vw)
        if i == 0:
            b.emit(core, "mul", total, acc, weight)
        else:
            b.emit(core, "add", total, total, acc)


def ks_of(kv: _KV) -> View:
    """K of the kv head in sp (vector mode reads its rows directly)."""
    assert kv.kt.w.view is not None
    return kv.kt.w.view


def _rows_dot(b: ProgramBuilder, sc: Scratch, a: View, rows: View, out: View) -> None:
    """out[:, j] = a @ rows[j, :]^T on the vector unit: a broadcast multiply by row j and a
    row sum per output column (products of int8 by int16 fit int32; sums are int64)."""
    core = sc.core
    t = sc("i32", a.rows, a.cols)
    for j in range(rows.rows):
        b.emit(core, "mul", t, a, sub(rows, j, j + 1))
        b.emit(core, "rsum", cols(out, j, j + 1), t)


def choose_mode(
    arch: Arch, q: Heads, k: Heads, v: Heads, plan: AttentionPlan, free_macros: int | None = None
) -> str:
    """The cheaper lowering by a per-core cycle estimate from the preset: macro writes and
    MVMs (plus, when fewer than the needed macros are free, reloading the static tiles the
    writes evict from dram) against broadcast-multiply / row-sum passes on the vector unit."""
    sq, sk, d, dv, group = q.seq, k.seq, k.dim, v.dim, q.heads // k.heads
    m = arch.macro
    writes = math.ceil(sk * (d + dv) * 8 / m.write_bits_per_cycle)
    per_vec = m.input_bits // m.bits_per_cycle
    tiles_qk = math.ceil(d / m.rows) * math.ceil(sk / m.cols)
    tiles_v = math.ceil(sk / m.rows) * math.ceil(dv / m.cols)
    passes = 1 if plan.p_max < 128 else 2
    mvm = (tiles_qk + tiles_v * passes) * (sq * per_vec + m.pipeline_cycles)
    evicted = max(
        0, tiles_qk + tiles_v - (arch.core.macros if free_macros is None else free_macros)
    )
    reload = evicted * math.ceil(
        m.rows * m.cols / arch.dram_bytes_per_cycle + m.rows * m.cols * 8 / m.write_bits_per_cycle
    )
    macro = writes + group * mvm + reload
    lanes, pipe = arch.core.vector_lanes, arch.core.vector_pipeline_cycles
    qk = sk * 2 * (math.ceil(sq * d / lanes) + pipe)
    pv = dv * 2 * (math.ceil(sq * sk / lanes) + pipe)
    vector = math.ceil(sk * dv / lanes) + pipe + group * (qk + pv)
    return "vector" if vector < macro else "macro"
