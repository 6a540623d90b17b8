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
from cimc.backend.asm_alloc import rows as row_view
from cimc.backend.lower_common import (
    check_shape,
    emit_req,
    load_const,
    req_consts,
    row_bytes,
    row_chunk,
    row_work,
)
from cimc.errors import CimcError
from cimc.machine.program import DTYPE_BYTES, DType, View
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


def _check_broadcast(a: View, other: View, loc: str | None) -> None:
    if other.rows not in (1, a.rows) or other.cols not in (1, a.cols):
        raise CimcError(
            f"operand {other.rows}x{other.cols} does not broadcast to {a.rows}x{a.cols}", loc
        )


def lower_add(b: ProgramBuilder, a: View, other: View, y: View, plan: AddPlan) -> None:
    """y = clamp(RSHR(a*Ma + other*Mb, s), lo, hi) (sub: plan_add(subtract=True))."""
    check_shape(y, a.shape, "add output", b.loc)
    _check_broadcast(a, other, b.loc)

    def body(sc: Scratch, ins: list[View], out: View) -> None:
        ta = sc("i64", out.rows, out.cols)
        tb = sc("i64", ins[1].rows, ins[1].cols)
        b.emit(sc.core, "mul", ta, ins[0], plan.mult_a)
        b.emit(sc.core, "mul", tb, ins[1], plan.mult_b)
        b.emit(sc.core, "add", ta, ta, tb)
        b.emit(sc.core, "req", out, ta, 1, plan.shift, 0, plan.lo, plan.hi)

    rowwise(b, [a, other], y, body, 16 * y.cols)


def lower_mul(b: ProgramBuilder, a: View, other: View, y: View, plan: MulPlan) -> None:
    """y = REQ(a * other, M, s)."""
    check_shape(y, a.shape, "mul output", b.loc)
    _check_broadcast(a, other, b.loc)
    rc = req_consts(b, b.fresh_name("mul"), plan.requant, y.cols)

    def body(sc: Scratch, ins: list[View], out: View) -> None:
        t = sc("i64", out.rows, out.cols)
        b.emit(sc.core, "mul", t, ins[0], ins[1])
        emit_req(b, sc, out, t, rc)

    rowwise(b, [a, other], y, body, 8 * y.cols, fixed=16 * y.cols)


def lower_rescale(b: ProgramBuilder, x: View, y: View, plan: RescalePlan) -> None:
    """y = REQ(x, M, s): a change of scale or width."""
    check_shape(y, x.shape, "rescale output", b.loc)
    rc = req_consts(b, b.fresh_name("rescale"), plan.requant, y.cols)
    rowwise(b, [x], y, lambda sc, ins, out: emit_req(b, sc, out, ins[0], rc), 0, 16 * y.cols)


def lower_unary(
    b: ProgramBuilder, x: View, y: View, plan: LutPlan, name: str | None = None
) -> None:
    """y = T[x + 128] for int8 x (gelu, silu, exp, ... tables from plan_unary)."""
    check_shape(y, x.shape, "unary output", b.loc)
    if x.dtype != "i8":
        raise CimcError(f"LUT8 input must be i8 (requantize first), got {x.dtype}", b.loc)
    table = b.const(name or b.fresh_name("lut"), np.asarray(plan.table).reshape(1, 256), y.dtype)

    def body(sc: Scratch, ins: list[View], out: View) -> None:
        b.emit(sc.core, "lut", out, ins[0], load_const(b, sc, table))

    rowwise(b, [x], y, body, 0, fixed=256 * DTYPE_BYTES[y.dtype])


def lower_reduce(b: ProgramBuilder, x: View, y: View, plan: ReducePlan) -> None:
    """y[R x 1] = REQ(RSUM(x) or RMAX(x), M, s) over the last axis of x[R x C]."""
    check_shape(y, (x.rows, 1), "reduction output", b.loc)
    rc = req_consts(b, b.fresh_name("reduce"), plan.requant, 1)
    acc: DType = "i64"

    def body(sc: Scratch, ins: list[View], out: View) -> None:
        t = sc(acc, out.rows, 1)
        b.emit(sc.core, "rmax" if plan.kind == "max" else "rsum", t, ins[0])
        emit_req(b, sc, out, t, rc)

    rowwise(b, [x], y, body, 8, fixed=64)
