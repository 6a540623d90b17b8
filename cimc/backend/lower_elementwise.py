"""Lowering of the element-wise recipes: add/sub, mul, rescale, unary LUT8, reductions.

Integer steps (cimc/quant/recipes.py), each a few vector instructions per row chunk:
- add/sub  t = a*Ma + b*Mb (int64); y = clamp(RSHR(t, s), lo, hi) = `req y, t, 1, s, 0, lo, hi`
- mul      y = REQ(a*b, M, s) (product in int64)
- rescale  y = REQ(x, M, s)
- unary    y = LUT8(x, T) (`lut` against a 1x256 table of y's dtype)
- reduce   y = REQ(RSUM(x), M, s) or REQ(RMAX(x), M, s) over the last axis
The second operand of a binary op broadcasts numpy-style as 1xC, Rx1, 1x1 or RxC.
Rows are split evenly over the builder's cores, then into chunks that fit the scratchpad.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from cimc.backend.asm import ProgramBuilder, Scratch
from cimc.backend.asm_alloc import chunks, cols, sub
from cimc.backend.asm_alloc import rows as row_view
from cimc.backend.lower_common import (
    SLACK,
    check_shape,
    emit_req,
    load_const,
    req_consts,
    row_bytes,
    row_chunk,
    row_work,
)
from cimc.errors import CimcError
from cimc.machine.program import DTYPE_BYTES, View
from cimc.quant.plans import AddPlan, LutPlan, MulPlan, ReducePlan, RescalePlan

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
    (1xC, 1x1 broadcasts) are loaded whole with every chunk."""
    use = tuple(cores or b.cores)
    total = y.rows
    per_row = row_bytes((y.cols, y.dtype)) + temp_bytes_per_row
    per_row += sum(DTYPE_BYTES[v.dtype] * v.cols for v in operands if v.rows == total)
    fixed += sum(v.nbytes for v in operands if v.rows != total)
    chunk = row_chunk(b, use, per_row, fixed, len(operands) + 8)
    for core, r0, r1 in row_work(total, use, chunk):
        with b.scratch(core) as sc:
            ins = []
            for v in operands:
                part = row_view(v, r0, r1) if v.rows == total else v
                buf = sc(v.dtype, part.rows, part.cols)
                b.emit(core, "dma", buf, part)
                ins.append(buf)
            out = sc(y.dtype, r1 - r0, y.cols)
            body(sc, ins, out)
            b.emit(core, "dma", row_view(y, r0, r1), out)


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
    chunk = row_chunk(b, b.cores, per_elem * cw + per_row, fixed, len(operands) + 8)
    for core, r0, r1 in row_work(total, b.cores, chunk):
        for c0, c1 in chunks(width, cw):
            with b.scratch(core) as sc:
                ins = []
                for v in operands:
                    rows_full, cols_full = full(v)
                    part = row_view(v, r0, r1) if rows_full else v
                    part = cols(part, c0, c1) if cols_full else part
                    buf = sc(v.dtype, part.rows, part.cols)
                    b.emit(core, "dma", buf, part)
                    ins.append(buf)
                out = sc(y.dtype, r1 - r0, c1 - c0)
                body(sc, ins, out, c0)
                b.emit(core, "dma", sub(y, r0, r1, c0, c1), out)


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
