"""Instruction lowerings of decode.rotary and decode.attention: `DECODE_LOWERINGS`, the
backend's table with these two added, is what decode programs are lowered with.

KV cache layout (part of the programs' interface): per attention node NAME two `.state`
declarations `NAME.k_cache` i8[S*Hkv*C x D] and `NAME.v_cache` i8[S*Hkv*C x Dv] for S
sequences, sequence-major then head-major: row (s*Hkv + h)*C + p holds position p of kv
head h of sequence s (S = 1: row h*C + p). Prefill and decode of one batch declare them
alike, so the runner carries them from one program run to the next.

decode.attention, for n rows at positions pos[0..n-1], in segments (rows of sequence s):
    scatter the new K and V rows of each kv head and sequence into rows (s*Hkv + h)*C +
      pos[i]  (run-time index: a position beyond the capacity is an error of `scatter`)
    allowed[i, :] = tril(C x C)[pos[i], :]  AND  mask[0, :]     (gather + min)
    the fused attention lowering, one group per sequence, over the first windows[s] cache
      rows of sequence s with that mask (not causal): masked logits get exp 0, so the
      cache rows beyond the position never matter, and the rows beyond the window are
      not read at all (the runner keeps every position below its window).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from cimc.backend.builder.alloc import chunks, reshape, split_even, sub
from cimc.backend.builder.asm import ProgramBuilder, Scratch
from cimc.backend.lower.attention import AttentionGroup, lower_attention_groups
from cimc.backend.lower.common import Heads, req_consts
from cimc.backend.lower.emitter import Emitter
from cimc.backend.lower.rotary import rotate_rows
from cimc.backend.lower.table import LOWERINGS, Lowering
from cimc.decode.ops import DecodeAttention, DecodeRotary
from cimc.ir.graph import Node
from cimc.ir.op_base import Op
from cimc.machine.program import View

CAUSAL_CONST = "decode.causal"  # tril(C x C), shared by every layer


def state_names(node_name: str) -> tuple[str, str]:
    """The `.state` names of an attention node's K and V caches."""
    from cimc.backend.builder.values import decl_name

    base = decl_name(node_name)
    return f"{base}.k_cache", f"{base}.v_cache"


def _positions(b: ProgramBuilder, sc: Scratch, pos: View) -> View:
    """The [1 x n] positions as an [n x 1] index in the scratchpad."""
    n = pos.rows * pos.cols
    idx = sc(pos.dtype, n, 1)
    b.emit(sc.core, "dma", idx, reshape(pos, n, 1))
    return idx


def lower_decode_rotary(em: Emitter, node: Node, op: DecodeRotary) -> None:
    b, plan, name = em.b, op.plan, em.name(node)
    bt, heads, n, d = node.type.shape
    x = Heads(em.operand(node, 0), bt, heads, n, d, head_major=True)
    y = Heads(em.result(node), bt, heads, n, d, head_major=True)
    cos = b.const(f"{name}.cos", plan.cos, "i16")
    sin = b.const(f"{name}.sin", plan.sin, "i16")
    rc = req_consts(b, name, plan.requant, d)
    pos = em.operand(node, 1)
    pairs = [(bi, h) for bi in range(bt) for h in range(heads)]
    per_row = d * (2 + 2 + 2 + 4 + 2 + 8) + 64
    for core, (a, z) in zip(b.cores, split_even(len(pairs), len(b.cores)), strict=False):
        chunk = max(1, (b.sp_largest_free(core) - 2048) // per_row)
        for s0, s1 in chunks(n, chunk):
            with b.scratch(core) as sc:
                idx = _positions(b, sc, pos)
                cs, sn = sc("i16", s1 - s0, d), sc("i16", s1 - s0, d)
                b.emit(core, "gather", cs, cos, sub(idx, s0, s1))
                b.emit(core, "gather", sn, sin, sub(idx, s0, s1))
                for bi, h in pairs[a:z]:
                    src, dst = sub(x.head(bi, h), s0, s1), sub(y.head(bi, h), s0, s1)
                    rotate_rows(b, sc, src, dst, cs, sn, rc)


def lower_decode_attention(em: Emitter, node: Node, op: DecodeAttention) -> None:
    b, name, cap = em.b, em.name(node), op.capacity
    shapes = [em.shape(node, i) for i in range(3)]
    (_, hq, n, d), (_, hkv, _, _), (_, _, _, dv) = shapes[0], shapes[1], shapes[2]
    segments, windows = op.rows_of(n), op.windows_of(n)
    starts = [sum(segments[:s]) for s in range(len(segments))]
    k_name, v_name = state_names(node.name)
    k_cache = b.state(k_name, "i8", len(segments) * hkv * cap, d)
    v_cache = b.state(v_name, "i8", len(segments) * hkv * cap, dv)
    mask = em.operand(node, 4) if len(node.inputs) == 5 else None
    allowed = b.region(f"{name}.allowed", "i8", n, cap)
    causal = b.const(CAUSAL_CONST, np.tril(np.ones((cap, cap), np.int64)), "i8")
    core = b.cores[0]
    with b.scratch(core) as sc:
        idx = _positions(b, sc, em.operand(node, 3))
        for new, cache, width in (
            (em.operand(node, 1), k_cache, d),
            (em.operand(node, 2), v_cache, dv),
        ):
            for h in range(hkv):
                for s, (r0, rows_s) in enumerate(zip(starts, segments, strict=True)):
                    rows = sc("i8", rows_s, width)
                    first = h * n + r0
                    b.emit(core, "dma", rows, sub(new, first, first + rows_s))
                    block = (s * hkv + h) * cap
                    b.emit(
                        core,
                        "scatter",
                        sub(cache, block, block + cap),
                        rows,
                        sub_idx(idx, r0, rows_s, n),
                    )
        ok = sc("i8", n, cap)
        b.emit(core, "gather", ok, causal, idx)
        if mask is not None:
            user = sc("i8", 1, cap)
            b.emit(core, "dma", user, reshape(mask, 1, cap))
            b.emit(core, "min", ok, ok, user)
        b.emit(core, "dma", allowed, ok)
    groups = []
    for s, (r0, rows_s, window) in enumerate(zip(starts, segments, windows, strict=True)):
        k_s = sub(k_cache, s * hkv * cap, (s + 1) * hkv * cap)
        v_s = sub(v_cache, s * hkv * cap, (s + 1) * hkv * cap)
        groups.append(
            AttentionGroup(
                Heads(em.operand(node, 0), 1, hq, rows_s, d, True, capacity=n, offset=r0),
                Heads(k_s, 1, hkv, window, d, head_major=True, capacity=cap),
                Heads(v_s, 1, hkv, window, dv, head_major=True, capacity=cap),
                Heads(em.result(node), 1, hq, rows_s, dv, True, capacity=n, offset=r0),
                sub(allowed, r0, r0 + rows_s, 0, window),
            )
        )
    plan = replace(op.plan, causal=False)
    macros = em.reserved_macros() or None
    lower_attention_groups(b, groups, plan, name=name, macros=macros)


def sub_idx(idx: View, r0: int, rows: int, n: int) -> View:
    """Rows r0:r0+rows of the [n x 1] position index (the whole view when that is all)."""
    return idx if (r0, rows) == (0, n) else sub(idx, r0, r0 + rows)


DECODE_LOWERINGS: dict[type[Op], Lowering] = {
    **LOWERINGS,
    DecodeRotary: lower_decode_rotary,
    DecodeAttention: lower_decode_attention,
}
