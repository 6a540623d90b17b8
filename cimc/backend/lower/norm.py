"""Lowering of layer_norm / rms_norm by exact centering (cimc/quant/recipes.py `norm`).

Per row of n channels, all exact:
    s1 = RSUM(x), s2 = RSUM(x*x)                      (x*x < 2^30: int32 elements)
    c  = n*x - s1          (rms_norm: n*x)            int64 elements
    V  = n*s2 - s1*s1      (rms_norm: n*s2)           int64 per row
    r  = ISQRT((V + E) << 2k); inv = DIV(2^P, max(r, 1))
    u  = RSHR(c * inv, P - k - 16)                    (|c*inv| < 2^63, proven by the plan)
    y  = clamp(RSHR(u*G + B, s), lo, hi)              (`req y, t, 1, s, 0, lo, hi`)
G and B are per-channel constants (1 x n rows, broadcast over the chunk).
"""

from __future__ import annotations

from cimc.backend.builder.asm import ProgramBuilder, Scratch
from cimc.backend.lower.common import check_shape
from cimc.backend.lower.elementwise import rowwise
from cimc.errors import CimcError
from cimc.machine.program import View, dtype_range
from cimc.quant.plans import NormPlan


def lower_norm(
    b: ProgramBuilder, x: View, y: View, plan: NormPlan, name: str | None = None
) -> None:
    """y[R x n] = layer_norm / rms_norm of x[R x n] (int8 or int16 codes)."""
    if x.cols != plan.n:
        raise CimcError(f"normalization expects {plan.n} channels, got {x.cols}", b.loc)
    check_shape(y, x.shape, "normalization output", b.loc)
    name = name or b.fresh_name("norm")
    gain = b.const(f"{name}.g", plan.gain.reshape(1, plan.n))
    bias = b.const(f"{name}.b", plan.bias.reshape(1, plan.n))
    n = plan.n

    def body(sc: Scratch, ins: list[View], out: View) -> None:
        core, xs, rows = sc.core, ins[0], out.rows
        gs, bs = ins[1], ins[2]  # gain and bias: loaded once per core by rowwise
        sq = sc("i32", rows, n)
        c = sc("i64", rows, n)
        s1, s2, t = sc("i64", rows, 1), sc("i64", rows, 1), sc("i64", rows, 1)
        b.emit(core, "mul", sq, xs, xs)
        b.emit(core, "rsum", s2, sq)
        b.emit(core, "mul", c, xs, n)
        b.emit(core, "mul", s2, s2, n)  # V = n * s2 ...
        if not plan.rms:
            b.emit(core, "rsum", s1, xs)
            b.emit(core, "sub", c, c, s1)
            b.emit(core, "mul", t, s1, s1)
            b.emit(core, "sub", s2, s2, t)  # ... - s1^2
        b.emit(core, "add", s2, s2, plan.eps_codes)
        b.emit(core, "shl", s2, s2, 2 * plan.pre_shift)
        b.emit(core, "isqrt", s2, s2)
        b.emit(core, "max", s2, s2, 1)
        b.emit(core, "fill", t, 1 << plan.recip_bits)
        b.emit(core, "div", t, t, s2)  # inv, one per row
        # u = RSHR(c * inv, ...) in Q.16, as one req: its clamp to int64 is the identity
        b.emit(core, "req", c, c, t, plan.u_shift, 0, *dtype_range("i64"))
        b.emit(core, "mul", c, c, gs)
        b.emit(core, "add", c, c, bs)
        b.emit(core, "req", out, c, 1, plan.shift, 0, plan.lo, plan.hi)

    rowwise(b, [x, gain, bias], y, body, 12 * n + 24)
