"""Compile-time lookup tables: LUT8 function tables, softmax exp tables, RoPE Q1.14.

Table entries are computed with mpmath at 128-bit working precision and rounded exactly
(ties to even). Unlike libm's exp/erf/tanh/cos, whose last bit differs between platforms,
this makes every table identical on every machine. A user-supplied Python callable is
evaluated in float64 instead (documented: deterministic only as far as that callable is).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import mpmath
import numpy as np

from cimc.errors import CimcError
from cimc.quant.constants import qrange, round_half_even

WORK_PREC = 128  # bits of mpmath working precision
EXP_FRAC_BITS = 30  # softmax exp tables: exp(-a) * 2^30, entries in [0, 2^30]
ROPE_FRAC_BITS = 14  # Q1.14 cos/sin: codes in [-16384, 16384]
LUT_SIZE = 256

MpFn = Callable[[mpmath.mpf], mpmath.mpf]


def _gelu(x: mpmath.mpf) -> mpmath.mpf:
    return x / 2 * (1 + mpmath.erf(x / mpmath.sqrt(2)))


def _gelu_tanh(x: mpmath.mpf) -> mpmath.mpf:
    k = mpmath.sqrt(2 / mpmath.pi)
    return x / 2 * (1 + mpmath.tanh(k * (x + mpmath.mpf("0.044715") * x**3)))


def _sigmoid(x: mpmath.mpf) -> mpmath.mpf:
    return 1 / (1 + mpmath.exp(-x))


# The named elementwise functions a LUT8 can implement exactly (by value).
UNARY_FUNCTIONS: dict[str, MpFn] = {
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
    "silu": lambda x: x * _sigmoid(x),
    "sigmoid": _sigmoid,
    "tanh": mpmath.tanh,
    "erf": mpmath.erf,
    "exp": mpmath.exp,
    "relu": lambda x: max(x, mpmath.mpf(0)),
    "neg": lambda x: -x,
    "abs": mpmath.fabs,
    "sqrt": lambda x: mpmath.sqrt(max(x, mpmath.mpf(0))),  # negative codes -> 0
}


def _minus_relu(f: MpFn) -> MpFn:
    return lambda x: f(x) - max(x, mpmath.mpf(0))


# f(x) - relu(x) of the functions that approach relu on both sides (plans.plan_ramp_unary).
RAMP_REMAINDERS = {
    f"{fn}-relu": _minus_relu(UNARY_FUNCTIONS[fn]) for fn in ("gelu", "gelu_tanh", "silu")
}
UNARY_FUNCTIONS.update(RAMP_REMAINDERS)


def remainder_of_relu(fn: str) -> str:
    """The name of the table function f(x) - relu(x) of a named f (RAMP_REMAINDERS)."""
    return f"{fn}-relu"


def _mpf_to_fraction(v: mpmath.mpf) -> Fraction:
    sign, man, exp, _ = mpmath.mpf(v)._mpf_  # value = (-1)^sign * man * 2^exp
    return Fraction(-int(man) if sign else int(man)) * Fraction(2) ** exp


def _round_mp(v: mpmath.mpf) -> int:
    """Exact round-half-even of an mpf (binary float) value."""
    return round_half_even(_mpf_to_fraction(v))


def _mp_codes(fn: MpFn, s_in: float, s_out: float) -> list[int]:
    """round(fn(c * s_in) / s_out) for c = -128..127, at WORK_PREC bits."""
    out = []
    with mpmath.workprec(WORK_PREC):
        for c in range(-128, 128):
            x = mpmath.mpf(c) * mpmath.mpf(s_in)  # exact: 8-bit x 53-bit product
            y = fn(x) / mpmath.mpf(s_out)
            out.append(_round_mp(y) if mpmath.isfinite(y) else (1 << 40) * int(mpmath.sign(y)))
    return out


def _float_codes(fn: Callable[[float], float], s_in: float, s_out: float) -> list[int]:
    codes = np.arange(-128, 128, dtype=np.float64)
    y = np.array([fn(float(c * s_in)) for c in codes], dtype=np.float64) / s_out
    if not np.all(np.isfinite(y)):
        raise CimcError("unary function returned NaN or infinity on the input range")
    return [int(v) for v in np.clip(np.rint(y), -(1 << 40), 1 << 40)]


def lut8_table(
    fn: str | Callable[[float], float],
    s_in: float,
    s_out: float,
    out_bits: int,
    loc: str | None = None,
) -> np.ndarray:
    """LUT8 table of an elementwise function: entry c + 128 is the output code of input c.

    T[c + 128] = clamp(round(f(c * s_in) / s_out), -qmax, qmax) for every int8 code c.
    `fn` is a name from UNARY_FUNCTIONS (exact, machine independent) or a float callable.
    """
    if not (s_in > 0 and s_out > 0):
        raise CimcError("LUT8 scales must be positive", loc)
    if isinstance(fn, str):
        if fn not in UNARY_FUNCTIONS:
            raise CimcError(f"no LUT8 recipe for {fn!r}; known: {sorted(UNARY_FUNCTIONS)}", loc)
        codes = _mp_codes(UNARY_FUNCTIONS[fn], s_in, s_out)
    else:
        codes = _float_codes(fn, s_in, s_out)
    lo, hi = qrange(out_bits)
    table = np.clip(np.array(codes, dtype=np.int64), lo, hi)
    return table.astype(np.int8 if out_bits == 8 else np.int16)


def exp_tables(step: float, loc: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Softmax exp tables (int32, 256 entries each, values in [0, 2^30]).

    hi[j] = round(exp(-256 * j * step) * 2^30), lo[l] = round(exp(-l * step) * 2^30), so that
    for a = rowmax - x in [0, 65535] input steps, exp(-a * step) * 2^30 is
    RSHR(hi[a // 256] * lo[a % 256], 30): a 16-bit difference through two LUT8 lookups.
    """
    if not step > 0:
        raise CimcError("softmax input scale must be positive", loc)
    hi, lo = [], []
    with mpmath.workprec(WORK_PREC):
        one = mpmath.mpf(1 << EXP_FRAC_BITS)
        for j in range(LUT_SIZE):
            hi.append(_round_mp(mpmath.exp(-256 * j * mpmath.mpf(step)) * one))
            lo.append(_round_mp(mpmath.exp(-j * mpmath.mpf(step)) * one))
    return np.array(hi, dtype=np.int32), np.array(lo, dtype=np.int32)


def rope_q14(values: np.ndarray) -> np.ndarray:
    """Q1.14 codes of given cos/sin values (e.g. the model's own float tables)."""
    v = np.asarray(values, dtype=np.float64)
    if not np.all(np.abs(v) <= 1.0):
        raise CimcError("rotary cos/sin table has values outside [-1, 1]")
    one = 1 << ROPE_FRAC_BITS
    return np.clip(np.rint(v * one), -one, one).astype(np.int16)


def rope_tables(
    n_pos: int, dim: int, base: float = 10000.0, offset: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Exact Q1.14 (cos, sin) [n_pos, dim] in the Hugging Face layout cat(freqs, freqs).

    angle(p, i) = (p + offset) * base^(-2i/dim), computed at WORK_PREC bits (the float32
    tables of a PyTorch model may differ by a few Q1.14 steps at large positions; use
    `rope_q14` on the model's own tables to match it).
    """
    if dim % 2 or dim <= 0 or n_pos <= 0:
        raise CimcError(f"rotary tables need a positive even dim and positions, got {dim}")
    half = dim // 2
    cos = np.zeros((n_pos, dim), np.int16)
    sin = np.zeros((n_pos, dim), np.int16)
    one = mpmath.mpf(1 << ROPE_FRAC_BITS)
    with mpmath.workprec(WORK_PREC):
        inv = [mpmath.power(mpmath.mpf(base), -mpmath.mpf(2 * i) / dim) for i in range(half)]
        for p in range(n_pos):
            for i in range(half):
                a = (p + offset) * inv[i]
                cos[p, i] = cos[p, i + half] = _round_mp(mpmath.cos(a) * one)
                sin[p, i] = sin[p, i + half] = _round_mp(mpmath.sin(a) * one)
    return cos, sin
