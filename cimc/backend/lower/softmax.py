"""Lowering of the masked integer softmax (cimc/quant/recipes.py `softmax`, last axis).

    m = RMAX(select(mask, x, below every code))
    a = clamp(select(mask, m - x, 0), 0, 65535); h = DIV(a, 256); l = a - 256*h
    e = select(mask, RSHR(LUT8(h-128, EH) * LUT8(l-128, EL), 30), 0)     in [0, 2^30]
    S = RSUM(e); R = DIV(out_max << 46, max(S, 1)); p = RSHR(e*R, 46)     in [0, out_max]
The sentinel of masked entries only has to lie below every int16 code: masked entries
never reach e, and a fully masked row gives e = 0 and p = 0 whatever the row max is.
`emit_exp` is shared with attention. Buffers are reused in place to keep 22 bytes per
element (16 KiB scratchpads hold a 250-wide row).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cimc.backend.builder.asm import ProgramBuilder, Scratch
from cimc.backend.lower.common import check_shape, load_const
from cimc.backend.lower.elementwise import rowwise
from cimc.errors import CimcError
from cimc.machine.program import View
from cimc.quant.plans import RECIP_BITS, SoftmaxPlan
from cimc.quant.tables import EXP_FRAC_BITS

MASKED = -(1 << 16)  # below every int16 code (the recipe's -2^40 needs no more)
EXP_BYTES_PER_ELEMENT = 22


@dataclass(frozen=True)
class ExpTables:
    """The two int32 exp tables as constants (shared memory)."""

    hi: View
    lo: View

    @staticmethod
    def declare(b: ProgramBuilder, name: str, exp_hi: np.ndarray, exp_lo: np.ndarray) -> ExpTables:
        return ExpTables(
            b.const(f"{name}.eh", np.asarray(exp_hi).reshape(1, 256), "i32"),
            b.const(f"{name}.el", np.asarray(exp_lo).reshape(1, 256), "i32"),
        )

    def load(self, b: ProgramBuilder, sc: Scratch) -> tuple[View, View]:
        return load_const(b, sc, self.hi), load_const(b, sc, self.lo)


def emit_exp(
    b: ProgramBuilder,
    sc: Scratch,
    x: View,
    mask: View | None,
    tables: tuple[View, View],
    wide: View | None = None,
) -> View:
    """e = exp(x - rowmax) * 2^30 over allowed entries (0 elsewhere), an i32 sp view.

    `wide` is an optional i64 buffer of x's shape to use for the product (else allocated)."""
    core, (r, c) = sc.core, x.shape
    buf1, buf2, buf3 = sc("i32", r, c), sc("i32", r, c), sc("i32", r, c)
    hi8, lo8, top = sc("i8", r, c), sc("i8", r, c), sc("i32", r, 1)
    if mask is not None:
        b.emit(core, "sel", buf1, mask, x, MASKED)
        b.emit(core, "rmax", top, buf1)
    else:
        b.emit(core, "rmax", top, x)
    b.emit(core, "sub", buf2, x, top)
    b.emit(core, "mul", buf2, buf2, -1)  # a = m - x
    if mask is not None:
        b.emit(core, "sel", buf2, mask, buf2, 0)
    b.emit(core, "max", buf2, buf2, 0)
    b.emit(core, "min", buf2, buf2, 65535)
    b.emit(core, "div", buf1, buf2, 256)  # h
    b.emit(core, "mul", buf3, buf1, 256)
    b.emit(core, "sub", buf2, buf2, buf3)  # l
    b.emit(core, "sub", hi8, buf1, 128)
    b.emit(core, "sub", lo8, buf2, 128)
    b.emit(core, "lut", buf1, hi8, tables[0])
    b.emit(core, "lut", buf3, lo8, tables[1])
    prod = wide if wide is not None else sc("i64", r, c)
    b.emit(core, "mul", prod, buf1, buf3)
    b.emit(core, "rshr", buf1, prod, EXP_FRAC_BITS)
    if mask is not None:
        b.emit(core, "sel", buf1, mask, buf1, 0)
    return buf1


def lower_softmax(
    b: ProgramBuilder,
    x: View,
    y: View,
    plan: SoftmaxPlan,
    mask: View | None = None,
    name: str | None = None,
) -> None:
    """y[R x C] = softmax of x[R x C] over the last axis; `mask` (i8, 1 = allowed) is
    RxC, 1xC, Rx1 or 1x1; y's dtype must hold out_max (i8 for 127, i16 for 255/32767)."""
    check_shape(y, x.shape, "softmax output", b.loc)
    if mask is not None and (mask.rows not in (1, x.rows) or mask.cols not in (1, x.cols)):
        raise CimcError(f"softmax mask {mask.rows}x{mask.cols} does not broadcast to x", b.loc)
    tables = ExpTables.declare(b, name or b.fresh_name("softmax"), plan.exp_hi, plan.exp_lo)
    operands = [x] if mask is None else [x, mask]

    def body(sc: Scratch, ins: list[View], out: View) -> None:
        core, rows = sc.core, out.rows
        wide = sc("i64", rows, out.cols)
        e = emit_exp(b, sc, ins[0], ins[1] if mask is not None else None, tables.load(b, sc), wide)
        s, rcp = sc("i64", rows, 1), sc("i64", rows, 1)
        b.emit(core, "rsum", s, e)
        b.emit(core, "max", s, s, 1)
        b.emit(core, "fill", rcp, plan.out_max << RECIP_BITS)
        b.emit(core, "div", rcp, rcp, s)
        b.emit(core, "mul", wide, e, rcp)
        b.emit(core, "rshr", out, wide, RECIP_BITS)

    rowwise(b, operands, y, body, EXP_BYTES_PER_ELEMENT * x.cols + 24, fixed=2048)
