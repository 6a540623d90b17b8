"""Lowering of rotary position embedding (cimc/quant/recipes.py `rotary`).

With x = [x1 | x2] (halves of the head dimension) and Q1.14 tables C, S:
    t[:, :D/2] = x1*C1 - x2*S1,   t[:, D/2:] = x2*C2 + x1*S2     (rotate_half, HF layout)
    y = REQ(t, M, s)                                              (|t| < 2^31: int32)
The halves are strided column views of the same scratchpad rows, so no data is moved to
form rotate_half(x). Table rows are positions: row `pos0 + s` serves sequence index s.
"""

from __future__ import annotations

from cimc.backend.builder.alloc import chunks, cols, split_even, sub
from cimc.backend.builder.asm import ProgramBuilder, Scratch
from cimc.backend.lower.common import Heads, ReqConsts, emit_req, req_consts
from cimc.errors import CimcError
from cimc.machine.program import View
from cimc.quant.plans import RotaryPlan


def as_heads(t: Heads | View, plan: RotaryPlan, pos0: int, loc: str | None) -> Heads:
    """A plain 2-D view as heads: sequence length = the table rows from pos0, head dim =
    the table width; [N*S x D] is head-major, [B*S x H*D] token-major."""
    if isinstance(t, Heads):
        return t
    seq, d = plan.cos.shape[0] - pos0, plan.cos.shape[1]
    if seq < 1 or t.rows % seq or t.cols % d:
        raise CimcError(
            f"rotary operand {t.rows}x{t.cols} is not [rows of {seq} positions x heads of {d}]",
            loc,
        )
    if t.cols == d:
        return Heads(t, t.rows // seq, 1, seq, d, head_major=True)
    return Heads(t, t.rows // seq, t.cols // d, seq, d)


def lower_rotary(
    b: ProgramBuilder,
    x: Heads | View,
    y: Heads | View,
    plan: RotaryPlan,
    pos0: int = 0,
    name: str | None = None,
) -> None:
    """y = RoPE(x) for every (batch, head); tables rows pos0 .. pos0 + seq - 1. Plain
    views are read as in `as_heads`."""
    x, y = as_heads(x, plan, pos0, b.loc), as_heads(y, plan, pos0, b.loc)
    seq, d = x.seq, x.dim
    if (y.batch, y.heads, y.seq, y.dim) != (x.batch, x.heads, seq, d):
        raise CimcError("rotary output must have the input's [batch, heads, seq, dim]", b.loc)
    if d % 2 or plan.cos.shape[1] != d or pos0 < 0 or pos0 + seq > plan.cos.shape[0]:
        raise CimcError(
            f"rotary tables {plan.cos.shape[0]}x{plan.cos.shape[1]} do not cover positions "
            f"{pos0}..{pos0 + seq - 1} of an even head dim {d}",
            b.loc,
        )
    name = name or b.fresh_name("rope")
    cos = b.const(f"{name}.cos", plan.cos, "i16")
    sin = b.const(f"{name}.sin", plan.sin, "i16")
    rc = req_consts(b, name, plan.requant, d)
    pairs = [(bi, h) for bi in range(x.batch) for h in range(x.heads)]
    per_row = d * (2 + 2 + 2 + 4 + 2 + 8) + 64
    for core, (a, z) in zip(b.cores, split_even(len(pairs), len(b.cores)), strict=False):
        rows = max(1, (b.sp_largest_free(core) - 2048) // per_row)
        for s0, s1 in chunks(seq, rows):
            with b.scratch(core) as sc:
                cs, sn = sc("i16", s1 - s0, d), sc("i16", s1 - s0, d)
                b.emit(core, "dma", cs, sub(cos, pos0 + s0, pos0 + s1))
                b.emit(core, "dma", sn, sub(sin, pos0 + s0, pos0 + s1))
                for bi, h in pairs[a:z]:
                    src, dst = sub(x.head(bi, h), s0, s1), sub(y.head(bi, h), s0, s1)
                    rotate_rows(b, sc, src, dst, cs, sn, rc)


def rotate_rows(
    b: ProgramBuilder, outer: Scratch, src: View, dst: View, cs: View, sn: View, rc: ReqConsts
) -> None:
    """dst = requant(src * cos + rotate_half(src) * sin) for rows of one head, on the core
    of `outer`; `cs` / `sn` hold the cos / sin rows of the same positions (also decode's)."""
    core, n, half = outer.core, src.rows, src.cols // 2
    with b.scratch(core) as sc:
        xs = sc(src.dtype, n, src.cols)
        b.emit(core, "dma", xs, src)
        t, u = sc("i32", n, src.cols), sc("i32", n, half)
        x1, x2 = cols(xs, 0, half), cols(xs, half, 2 * half)
        left, right = cols(t, 0, half), cols(t, half, 2 * half)
        b.emit(core, "mul", left, x1, cols(cs, 0, half))
        b.emit(core, "mul", u, x2, cols(sn, 0, half))
        b.emit(core, "sub", left, left, u)
        b.emit(core, "mul", right, x2, cols(cs, half, 2 * half))
        b.emit(core, "mul", u, x1, cols(sn, half, 2 * half))
        b.emit(core, "add", right, right, u)
        out = sc(dst.dtype, n, dst.cols)
        emit_req(b, sc, out, t, rc)
        b.emit(core, "dma", dst, out)
