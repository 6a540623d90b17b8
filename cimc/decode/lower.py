"""Instruction lowerings of decode.rotary and decode.attention: `DECODE_LOWERINGS`, the
backend's table with these two added, is what decode programs are lowered with.

KV cache layout (part of the programs' interface): per attention node NAME two `.state`
declarations `NAME.k_cache` i8[Hkv*C x D] and `NAME.v_cache` i8[Hkv*C x Dv], head-major:
row h*C + p holds position p of kv head h (batch 1). Prefill and decode declare them
alike, so the runner carries them from one program run to the next.

decode.attention, for n rows at positions pos[0..n-1]:
    scatter the n new K and V rows of each kv head into rows h*C + pos[i]  (run-time index:
      a position beyond the capacity is a run-time error of `scatter`)
    allowed[i, :] = tril(C x C)[pos[i], :]  AND  mask[0, :]     (gather + min)
    the fused attention lowering over all C cache rows with that mask (not causal):
      masked logits get exp 0, so the cache rows beyond the position never matter.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from cimc.backend.builder.alloc import chunks, reshape, split_even, sub
from cimc.backend.builder.asm import ProgramBuilder, Scratch
from cimc.backend.lower.attention import lower_attention
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
    k_name, v_name = state_names(node.name)
    k_cache = b.state(k_name, "i8", hkv * cap, d)
    v_cache = b.state(v_name, "i8", hkv * cap, dv)
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
                rows = sc("i8", n, width)
                b.emit(core, "dma", rows, sub(new, h * n, (h + 1) * n))
                b.emit(core, "scatter", sub(cache, h * cap, (h + 1) * cap), rows, idx)
        ok = sc("i8", n, cap)
        b.emit(core, "gather", ok, causal, idx)
        if mask is not None:
            user = sc("i8", 1, cap)
            b.emit(core, "dma", user, reshape(mask, 1, cap))
            b.emit(core, "min", ok, ok, user)
        b.emit(core, "dma", allowed, ok)
    q = Heads(em.operand(node, 0), 1, hq, n, d, head_major=True)
    k = Heads(k_cache, 1, hkv, cap, d, head_major=True)
    v = Heads(v_cache, 1, hkv, cap, dv, head_major=True)
    out = Heads(em.result(node), 1, hq, n, dv, head_major=True)
    plan = replace(op.plan, causal=False)
    macros = em.reserved_macros() or None
    lower_attention(b, q, k, v, out, plan, mask=allowed, name=name, macros=macros)


DECODE_LOWERINGS: dict[type[Op], Lowering] = {
    **LOWERINGS,
    DecodeRotary: lower_decode_rotary,
    DecodeAttention: lower_decode_attention,
}
