"""Lowering of the element-wise recipes: add/sub, mul, rescale, unary LUT8, reductions.

Integer steps (cimc/quant/recipes.py), each a few vector instructions per row chunk:
- add/sub  t = a*Ma + b*Mb (int64); y = clamp(RSHR(t, s), lo, hi) = `req y, t, 1, s, 0, lo, hi`
- mul      y = REQ(a*b, M, s) (product in int64)
- rescale  y = REQ(x, M, s)
- unary    y = LUT8(x, T) (`lut` against a 1x256 table of y's dtype)
- ramp     y = clamp(REQ(max(x, 0)) + LUT8(REQ(x), T)): gelu / silu of int16 x
- reduce   y = REQ(RSUM(x), M, s) or REQ(RMAX(x), M, s) over the last axis
The second operand of a binary op broadcasts numpy-style as 1xC, Rx1, 1x1 or RxC.
Rows are split evenly over the builder's cores, then into chunks that fit the scratchpad.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from cimc.backend.builder.alloc import chunks, cols, sub
from cimc.backend.builder.alloc import rows as row_view
from cimc.backend.builder.asm import ProgramBuilder, Scratch
from cimc.backend.lower import kept_rows
from cimc.backend.lower.common import (
    SLACK,
    check_shape,
    emit_req,
    load_const,
    req_consts,
    row_bytes,
    row_chunk,
    row_work,
)
from cimc.backend.lower.fanout import fan_out
from cimc.backend.lower.kept_rows import CoreSpan
from cimc.errors import CimcError
from cimc.machine.program import DTYPE_BYTES, View
from cimc.quant.plans import (
    AddPlan,
    LutPlan,
    MulPlan,
    RampLutPlan,
    ReducePlan,
    RescalePlan,
)

# body(scratch, operand chunks in sp, output chunk in sp)
Body = Callable[[Scratch, list[View], View], None]


def rowwise(
    b: ProgramBuilder,
    operands: Sequence[View],
    y: View,
    body: Body,
    temp_bytes_per_row: int,
    fixed: int = 0,
    cores: Sequence[int] | None = None,
) -> None:
    """Run `body` over row chunks: operands with y's row count are cut with it, the others
    (1xC, 1x1 broadcasts, read-only in `body`) are loaded once per core, by a NoC fan-out
    from one load when that is cheaper (cimc/backend/lower/fanout.py), and kept for its chunks."""
    use = tuple(cores or b.cores)
    total = y.rows
    per_row = row_bytes((y.cols, y.dtype)) + temp_bytes_per_row
    per_row += sum(DTYPE_BYTES[v.dtype] * v.cols for v in operands if v.rows == total)
    fixed += sum(v.nbytes for v in operands if v.rows != total)
    chunk = row_chunk(b, use, per_row, fixed, len(operands) + 8)
    work = row_work(total, use, chunk)
    taken, outs = _rows_in_sp(b, operands[0] if operands[0].rows == total else None, y, work)
    held = hold_broadcasts(b, [v for v in operands if v.rows != total], [c for c, _, _ in work])
    for core, r0, r1 in work:
        with b.scratch(core) as sc:
            ins, kept = [], iter(held.get(core, []))
            for j, v in enumerate(operands):
                if v.rows != total:
                    ins.append(next(kept))
                elif j == 0 and taken:
                    ins.append(taken[(core, r0, r1)])
                else:
                    buf = sc(v.dtype, r1 - r0, v.cols)
                    b.emit(core, "dma", buf, row_view(v, r0, r1))
                    ins.append(buf)
            out = outs.get((core, r0, r1)) or sc(y.dtype, r1 - r0, y.cols)
            body(sc, ins, out)
            b.emit(core, "dma", row_view(y, r0, r1), out)
    for core, views in held.items():
        b.free(core, *views)
    _rows_done(b, y, taken, outs)


def _rows_in_sp(
    b: ProgramBuilder, first: View | None, y: View, work: Sequence[CoreSpan]
) -> tuple[dict[CoreSpan, View] | None, dict[CoreSpan, View]]:
    """(the first operand's rows still in the scratchpads from the op that wrote them, if
    they match `work`; output buffers to keep there for the next op, or none)."""
    taken = kept_rows.take(b, first, work) if first is not None else None
    if taken is None:
        kept_rows.release(b)
    keep = kept_rows.can_keep(b, y, work)
    outs = {(c, r0, r1): b.alloc(c, y.dtype, r1 - r0, y.cols) for c, r0, r1 in work if keep}
    return taken, outs


def _rows_done(
    b: ProgramBuilder, y: View, taken: dict[CoreSpan, View] | None, outs: dict[CoreSpan, View]
) -> None:
    for (core, _, _), view in (taken or {}).items():
        b.free(core, view)
    if outs:
        kept_rows.keep(b, y, outs)


def hold_broadcasts(
    b: ProgramBuilder, shared: Sequence[View], cores: Sequence[int]
) -> dict[int, list[View]]:
    """Each view of `shared` copied once into a buffer of every core in `cores` (the
    caller frees them): a per-channel constant read by every chunk costs one load."""
    active = list(dict.fromkeys(cores))
    if not shared:
        return {}
    held = {c: [b.alloc(c, v.dtype, v.rows, v.cols) for v in shared] for c in active}
    for j, v in enumerate(shared):
        fan_out(b, v, [(c, held[c][j]) for c in active])
    return held


BlockBody = Callable[[Scratch, list[View], View, int], None]


def blockwise(
    b: ProgramBuilder,
    operands: Sequence[View],
    y: View,
    body: BlockBody,
    temp_bytes_per_elem: int,
    fixed: int = 0,
) -> None:
    """Like `rowwise` for ops whose columns are independent: when a whole row does not fit
    the scratchpad, rows are also cut into column blocks; `body` gets the block's first
    column (for per-channel constants)."""
    total, width = y.rows, y.cols

    def full(v: View) -> tuple[bool, bool]:
        return v.rows == total, v.cols == width

    per_elem = DTYPE_BYTES[y.dtype] + temp_bytes_per_elem
    per_elem += sum(DTYPE_BYTES[v.dtype] for v in operands if full(v) == (True, True))
    per_row = sum(DTYPE_BYTES[v.dtype] for v in operands if full(v) == (True, False))
    fixed += sum(v.nbytes for v in operands if not full(v)[0])
    slack = SLACK * (len(operands) + 8)
    free = min(b.sp_largest_free(c) for c in b.cores) - fixed - slack - per_row
    cw = max(1, min(width, free // per_elem))
    if full(operands[0]) == (True, True) and _by_columns(b, operands, y, body, per_elem, fixed):
        return
    chunk = row_chunk(b, b.cores, per_elem * cw + per_row, fixed, len(operands) + 8)
    work = row_work(total, b.cores, chunk)
    whole = cw >= width and full(operands[0]) == (True, True)  # rows can stay in sp
    taken, outs = _rows_in_sp(b, operands[0], y, work) if whole else (None, {})
    for core, r0, r1 in work:
        for c0, c1 in chunks(width, cw):
            with b.scratch(core) as sc:
                ins = []
                for j, v in enumerate(operands):
                    if j == 0 and taken:
                        ins.append(taken[(core, r0, r1)])
                        continue
                    rows_full, cols_full = full(v)
                    part = row_view(v, r0, r1) if rows_full else v
                    part = cols(part, c0, c1) if cols_full else part
                    buf = sc(v.dtype, part.rows, part.cols)
                    b.emit(core, "dma", buf, part)
                    ins.append(buf)
                out = outs.get((core, r0, r1)) or sc(y.dtype, r1 - r0, c1 - c0)
                body(sc, ins, out, c0)
                b.emit(core, "dma", sub(y, r0, r1, c0, c1), out)
    if whole:
        _rows_done(b, y, taken, outs)
    else:
        kept_rows.release(b)


def _by_columns(
    b: ProgramBuilder,
    operands: Sequence[View],
    y: View,
    body: BlockBody,
    per_elem: int,
    fixed: int,
) -> bool:
    """blockwise over the column blocks of operand 0 that its producer (a linear layer)
    left in the home cores' scratchpads, when they are there and each block's buffers fit;
    False (and nothing emitted) otherwise."""
    pieces = kept_rows.take_cols(b, operands[0])
    if pieces is None:
        return False
    total, slack = y.rows, SLACK * (len(operands) + 8)
    if any(
        total * (c1 - c0) * per_elem + fixed + slack > b.sp_largest_free(core)
        for core, c0, c1 in pieces
    ):
        for (core, _, _), view in pieces.items():
            b.free(core, view)
        return False
    for (core, c0, c1), held in sorted(pieces.items(), key=lambda kv: kv[0][1]):
        with b.scratch(core) as sc:
            ins = [held]
            for v in operands[1:]:
                part = cols(v, c0, c1) if v.cols == y.cols else v
                buf = sc(v.dtype, part.rows, part.cols)
                b.emit(core, "dma", buf, part)
                ins.append(buf)
            out = sc(y.dtype, total, c1 - c0)
            body(sc, ins, out, c0)
            b.emit(core, "dma", sub(y, 0, total, c0, c1), out)
        b.free(core, held)
    return True


def _check_broadcast(a: View, other: View, loc: str | None) -> None:
    if other.rows not in (1, a.rows) or other.cols not in (1, a.cols):
        raise CimcError(
            f"operand {other.rows}x{other.cols} does not broadcast to {a.rows}x{a.cols}", loc
        )


def lower_add(b: ProgramBuilder, a: View, other: View, y: View, plan: AddPlan) -> None:
    """y = clamp(RSHR(a*Ma + other*Mb, s), lo, hi) (sub: plan_add(subtract=True))."""
    check_shape(y, a.shape, "add output", b.loc)
    _check_broadcast(a, other, b.loc)

    def body(sc: Scratch, ins: list[View], out: View, c0: int) -> None:
        ta = sc("i64", out.rows, out.cols)
        tb = sc("i64", ins[1].rows, ins[1].cols)
        b.emit(sc.core, "mul", ta, ins[0], plan.mult_a)
        b.emit(sc.core, "mul", tb, ins[1], plan.mult_b)
        b.emit(sc.core, "add", ta, ta, tb)
        b.emit(sc.core, "req", out, ta, 1, plan.shift, 0, plan.lo, plan.hi)

    blockwise(b, [a, other], y, body, 16)


def lower_mul(b: ProgramBuilder, a: View, other: View, y: View, plan: MulPlan) -> None:
    """y = REQ(a * other, M, s)."""
    check_shape(y, a.shape, "mul output", b.loc)
    _check_broadcast(a, other, b.loc)
    rc = req_consts(b, b.fresh_name("mul"), plan.requant, y.cols)

    def body(sc: Scratch, ins: list[View], out: View, c0: int) -> None:
        t = sc("i64", out.rows, out.cols)
        b.emit(sc.core, "mul", t, ins[0], ins[1])
        emit_req(b, sc, out, t, rc, c0)

    blockwise(b, [a, other], y, body, 8 + 16)


def lower_rescale(b: ProgramBuilder, x: View, y: View, plan: RescalePlan) -> None:
    """y = REQ(x, M, s): a change of scale or width."""
    check_shape(y, x.shape, "rescale output", b.loc)
    rc = req_consts(b, b.fresh_name("rescale"), plan.requant, y.cols)
    blockwise(b, [x], y, lambda sc, ins, out, c0: emit_req(b, sc, out, ins[0], rc, c0), 16)


def lower_unary(
    b: ProgramBuilder, x: View, y: View, plan: LutPlan, name: str | None = None
) -> None:
    """y = T[x + 128] for int8 x (gelu, silu, exp, ... tables from plan_unary)."""
    check_shape(y, x.shape, "unary output", b.loc)
    if x.dtype != "i8":
        raise CimcError(f"LUT8 input must be i8 (requantize first), got {x.dtype}", b.loc)
    table = b.const(name or b.fresh_name("lut"), np.asarray(plan.table).reshape(1, 256), y.dtype)

    def body(sc: Scratch, ins: list[View], out: View, c0: int) -> None:
        b.emit(sc.core, "lut", out, ins[0], load_const(b, sc, table))

    blockwise(b, [x], y, body, 0, fixed=256 * DTYPE_BYTES[y.dtype])


def lower_ramp_unary(
    b: ProgramBuilder, x: View, y: View, plan: RampLutPlan, name: str | None = None
) -> None:
    """y = clamp(REQ(max(x, 0)) + T[REQ(x) + 128], lo, hi): gelu / silu of int16 x as
    its relu part plus a LUT8 of the remainder (cimc/quant/recipes.py, ramp_unary)."""
    check_shape(y, x.shape, "ramp + table output", b.loc)
    table = b.const(name or b.fresh_name("lut"), np.asarray(plan.table).reshape(1, 256), y.dtype)
    ramp = req_consts(b, b.fresh_name("ramp"), plan.ramp, y.cols)
    index = req_consts(b, b.fresh_name("index"), plan.index, y.cols)

    def body(sc: Scratch, ins: list[View], out: View, c0: int) -> None:
        relu, part = sc("i32", out.rows, out.cols), sc(y.dtype, out.rows, out.cols)
        codes = sc("i8", out.rows, out.cols)
        b.emit(sc.core, "max", relu, ins[0], 0)
        emit_req(b, sc, relu, relu, ramp, c0)
        emit_req(b, sc, codes, ins[0], index, c0)
        b.emit(sc.core, "lut", part, codes, load_const(b, sc, table))
        b.emit(sc.core, "add", relu, relu, part)
        b.emit(sc.core, "req", out, relu, 1, 0, 0, plan.lo, plan.hi)

    blockwise(b, [x], y, body, 4 + 1 + DTYPE_BYTES[y.dtype], fixed=256 * DTYPE_BYTES[y.dtype])


def lower_reduce(b: ProgramBuilder, x: View, y: View, plan: ReducePlan, axis: int = -1) -> None:
    """REQ(RSUM(x) or RMAX(x), M, s) of x[R x C] over its columns (axis -1 or 1: y is
    R x 1) or over its rows (axis 0: y is 1 x C, computed on transposed column blocks)."""
    if axis not in (-1, 0, 1):
        raise CimcError(f"reduction axis must be 0 or 1 of a 2-D view, got {axis}", b.loc)
    rc = req_consts(b, b.fresh_name("reduce"), plan.requant, 1)
    op = "rmax" if plan.kind == "max" else "rsum"
    if axis != 0:
        check_shape(y, (x.rows, 1), "reduction output", b.loc)

        def body(sc: Scratch, ins: list[View], out: View) -> None:
            t = sc("i64", out.rows, 1)
            b.emit(sc.core, op, t, ins[0])
            emit_req(b, sc, out, t, rc)

        rowwise(b, [x], y, body, 8, fixed=64)
        return
    check_shape(y, (1, x.cols), "reduction output", b.loc)
    per_col = 2 * x.rows * DTYPE_BYTES[x.dtype] + 8 + 2 * DTYPE_BYTES[y.dtype]
    width = row_chunk(b, b.cores, per_col, 64, 6)
    for core, c0, c1 in row_work(x.cols, b.cores, width):
        with b.scratch(core) as sc:
            xs, xt = sc(x.dtype, x.rows, c1 - c0), sc(x.dtype, c1 - c0, x.rows)
            b.emit(core, "dma", xs, cols(x, c0, c1))
            b.emit(core, "transpose", xt, xs)
            t, r = sc("i64", c1 - c0, 1), sc(y.dtype, c1 - c0, 1)
            b.emit(core, op, t, xt)
            emit_req(b, sc, r, t, rc)
            out = sc(y.dtype, 1, c1 - c0)
            b.emit(core, "transpose", out, r)
            b.emit(core, "dma", cols(y, c0, c1), out)
