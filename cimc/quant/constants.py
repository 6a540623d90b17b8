"""Compile-time quantization constants: scales, integer multipliers, quantized weights.

Every real-valued constant is turned into integers here, once, at compile time. The
results depend only on IEEE float64 basic operations (+ - * / max, correctly rounded
everywhere) and on exact rational arithmetic (`fractions.Fraction`), so they are identical
on every machine. Rounding rule for compile-time constants: nearest, ties to even
(numpy's `rint`, Python's `round`). The run-time rounding rule is RSHR (ties toward +inf).

Conventions:
- real value = code * scale, symmetric (zero point 0) everywhere.
- activations: int8 codes in [-127, 127] or int16 codes in [-32767, 32767]; recipes
  produce symmetric codes but accept the full two's-complement range on input.
- weights: int8 per output channel in [-127, 127], scale = max|w| / 127.
- calibration range: the absolute maximum seen ("max", the default) or a percentile of
  |x| ("percentile", e.g. 99.99) to cut rare outliers; the range maps to the largest code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from cimc.errors import CimcError
from cimc.quant.plan_arrays import Multipliers

MULT_BITS = 31  # |M| in [2^30, 2^31): a signed 32-bit multiplier
MIN_SHIFT = 1
MAX_SHIFT = 62
INT32_MAX = (1 << 31) - 1
INT64_MAX = (1 << 63) - 1
CALIBRATION_METHODS = ("max", "percentile")


def qmax(bits: int) -> int:
    """Largest symmetric code of an activation type: 127 (int8) or 32767 (int16)."""
    if bits not in (8, 16):
        raise CimcError(f"activation type must be int8 or int16, got {bits} bits")
    return (1 << (bits - 1)) - 1


def qrange(bits: int) -> tuple[int, int]:
    """Symmetric code range [-qmax, qmax] of an activation type."""
    q = qmax(bits)
    return -q, q


def round_half_even(x: Fraction) -> int:
    """Exact rational rounding to the nearest integer, ties to even."""
    return round(x)


def calibration_range(
    samples: np.ndarray, method: str = "max", percentile: float = 99.99, loc: str | None = None
) -> float:
    """The absolute range |x| <= R that an activation's codes must cover.

    "max": the largest |x| seen; "percentile": that percentile of |x| (linear interpolation,
    numpy's default), which clips rare outliers at the cost of saturating them.
    """
    a = np.abs(np.asarray(samples, dtype=np.float64)).ravel()
    if a.size == 0:
        raise CimcError("no calibration samples", loc)
    if not np.all(np.isfinite(a)):
        raise CimcError("calibration samples contain NaN or infinity", loc)
    if method == "max":
        return float(a.max())
    if method == "percentile":
        if not 0.0 < percentile <= 100.0:
            raise CimcError(f"percentile must be in (0, 100], got {percentile}", loc)
        return float(np.percentile(a, percentile))
    raise CimcError(f"unknown calibration method {method!r}; use one of {CALIBRATION_METHODS}", loc)


def activation_scale(absmax: float, bits: int, loc: str | None = None) -> float:
    """Per-tensor symmetric scale: the range maps to the largest code.

    A tensor that is identically zero gets scale 1/qmax (any positive scale is exact for it).
    """
    if not math.isfinite(absmax) or absmax < 0:
        raise CimcError(f"invalid calibration range {absmax}", loc)
    return (absmax if absmax > 0 else 1.0) / qmax(bits)


@dataclass(frozen=True)
class WeightQuant:
    """int8 weight codes and their per-output-channel scales (float64, compile time only)."""

    codes: np.ndarray  # int8, same shape as the weight
    scale: np.ndarray  # float64, one per output channel


def quantize_weight_per_channel(
    w: np.ndarray, axis: int = -1, loc: str | None = None, bits: int = 8
) -> WeightQuant:
    """Symmetric per-output-channel quantization, codes in [-127, 127] (`bits` = 4: in
    [-7, 7], still held in an int8 array).

    `axis` is the output-channel axis (the last one for cimc's [K, N] linear weights).
    An all-zero channel gets the smallest non-zero channel scale of the tensor (1.0 if all
    channels are zero): its codes are 0 whatever the scale, and a typical scale keeps the
    channel's bias well resolved and its requantization ratio in range.
    Computed in float64 a block of rows at a time (`row_blocks`): the weight may be a
    view of its model file, and a float64 copy of a whole weight is 8 bytes per parameter.
    """
    if bits not in (4, 8):
        raise CimcError(f"weights are 4 or 8 bits, got {bits}", loc)
    top = float((1 << (bits - 1)) - 1)
    w = np.asarray(w)
    ax = axis % w.ndim
    moved = np.moveaxis(w, ax, -1)
    rows = moved.reshape(math.prod(moved.shape[:-1]), moved.shape[-1])  # a view if ax is last
    absmax = np.zeros(rows.shape[1], np.float64)
    for block in row_blocks(rows):
        wf = np.asarray(block, np.float64)
        if not np.all(np.isfinite(wf)):
            raise CimcError("weight contains NaN or infinity", loc)
        absmax = np.maximum(absmax, np.abs(wf).max(axis=0, initial=0.0))
    scale = absmax / top
    nonzero = scale[scale > 0]
    fill = float(nonzero.min()) if nonzero.size else 1.0
    scale = np.where(scale > 0, scale, fill)
    codes = np.empty(rows.shape, np.int8)
    at = 0
    for block in row_blocks(rows):
        wf = np.asarray(block, np.float64)
        codes[at : at + len(wf)] = np.clip(np.rint(wf / scale), -top, top)
        at += len(wf)
    codes = np.ascontiguousarray(np.moveaxis(codes.reshape(moved.shape), -1, ax))
    return WeightQuant(codes=codes, scale=scale)


BLOCK_ELEMENTS = 1 << 20  # float64 working copies of a weight: 8 MiB at a time


def row_blocks(rows: np.ndarray) -> list[np.ndarray]:
    """Consecutive row ranges of a 2-D array, about BLOCK_ELEMENTS elements each (views)."""
    step = max(1, BLOCK_ELEMENTS // max(1, rows.shape[1]))
    return [rows[r : r + step] for r in range(0, rows.shape[0], step)]


def abs_max(x: np.ndarray) -> float:
    """max |x| (0 for an empty x; NaN if x holds one) without materializing |x|: exact,
    as max and min are."""
    v = np.asarray(x)
    if not v.size:
        return 0.0
    if v.dtype.kind != "f":
        v = v.astype(np.float64)
    return float(np.maximum(np.abs(v.max()), np.abs(v.min())))


def quantize_tensor(x: np.ndarray, scale: float, bits: int) -> np.ndarray:
    """Compile-time quantization of a constant at a given scale: rint, then saturate
    (in float64, a block at a time: `x` may be a whole embedding table)."""
    lo, hi = qrange(bits)
    x = np.asarray(x)
    flat = x.reshape(1, x.size) if x.ndim < 2 else x.reshape(math.prod(x.shape[:-1]), x.shape[-1])
    codes = np.empty(flat.shape, np.int8 if bits == 8 else np.int16)
    at = 0
    for block in row_blocks(flat):
        xf = np.asarray(block, np.float64)
        codes[at : at + len(xf)] = np.clip(np.rint(xf / scale), lo, hi)
        at += len(xf)
    return codes.reshape(x.shape)


def quantize_bias(
    b: np.ndarray, x_scale: float, w_scale: np.ndarray, loc: str | None = None
) -> np.ndarray:
    """int32 bias codes at the accumulator's scale x_scale * w_scale[n]."""
    q = np.rint(np.asarray(b, dtype=np.float64) / (x_scale * w_scale))
    if np.abs(q).max(initial=0) > INT32_MAX:
        raise CimcError(
            "bias does not fit int32 at the accumulator scale; widen the input range", loc
        )
    return q.astype(np.int32)


def _check_shift(shift: int, ratio: float, loc: str | None) -> None:
    if not MIN_SHIFT <= shift <= MAX_SHIFT:
        lo = 2.0 ** (MULT_BITS - 1 - MAX_SHIFT)
        hi = 2.0 ** (MULT_BITS - MIN_SHIFT)
        raise CimcError(
            f"requantization ratio {ratio!r} is outside the representable range "
            f"[{lo:.3g}, {hi:.3g}); check the calibration scales",
            loc,
        )


def quantize_multiplier(ratio: float, loc: str | None = None) -> tuple[int, int]:
    """(M, s) with M in [2^30, 2^31) and M / 2^s the nearest such value to `ratio` > 0.

    From frexp (ratio = m * 2^e, m in [0.5, 1)), M = round(m * 2^31) exactly (rational
    arithmetic, ties to even), s = 31 - e. Rounding up to 2^31 renormalizes. The relative
    error is at most 2^-31. Ratios needing a shift outside [1, 62] are an error.
    """
    if not math.isfinite(ratio) or ratio <= 0:
        raise CimcError(f"requantization ratio must be positive and finite, got {ratio!r}", loc)
    m, e = math.frexp(ratio)
    mult = round_half_even(Fraction(m) * (1 << MULT_BITS))
    if mult == 1 << MULT_BITS:
        mult >>= 1
        e += 1
    shift = MULT_BITS - e
    _check_shift(shift, ratio, loc)
    return mult, shift


def quantize_multipliers(
    ratios: np.ndarray, loc: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel `quantize_multiplier`: int64 arrays (M[n], s[n])."""
    pairs = [quantize_multiplier(float(r), loc) for r in np.asarray(ratios, np.float64).ravel()]
    mult = np.array([p[0] for p in pairs], dtype=np.int64)
    shift = np.array([p[1] for p in pairs], dtype=np.int64)
    return mult, shift


def shared_shift_multipliers(ratios: np.ndarray, loc: str | None = None) -> tuple[np.ndarray, int]:
    """Signed multipliers M[i] with ONE shift s: M[i] / 2^s ~ ratios[i].

    The largest |M| lies in [2^30, 2^31); the others are rounded at the same absolute
    precision 2^-s (ties to even). Zero ratios give M = 0. Used where several products
    are summed before one rounding (residual add, normalization gains).
    """
    r = [float(v) for v in np.asarray(ratios, np.float64).ravel()]
    if not all(math.isfinite(v) for v in r):
        raise CimcError("requantization ratio is not finite", loc)
    big = max((abs(v) for v in r), default=0.0)
    if big == 0.0:
        return np.zeros(len(r), np.int64), MIN_SHIFT
    _, shift = quantize_multiplier(big, loc)
    mult = [round_half_even(Fraction(v) * (1 << shift)) for v in r]
    if max(abs(v) for v in mult) >= 1 << MULT_BITS:  # only on a round-up: renormalize
        shift -= 1
        _check_shift(shift, big, loc)
        mult = [round_half_even(Fraction(v) * (1 << shift)) for v in r]
    return np.array(mult, dtype=np.int64), shift


@dataclass(frozen=True)
class Requant:
    """Constants of one REQ: clamp(RSHR(x * mult, shift), lo, hi) (zero point 0).

    `mult` and `shift` are int64 arrays of shape () (per tensor) or (N,) (per channel on
    the last axis).
    """

    mult: Multipliers
    shift: Multipliers
    lo: int
    hi: int


def requant_per_tensor(ratio: float, bits: int, loc: str | None = None) -> Requant:
    mult, shift = quantize_multiplier(ratio, loc)
    lo, hi = qrange(bits)
    return Requant(np.array(mult, np.int64), np.array(shift, np.int64), lo, hi)


def requant_per_channel(ratios: np.ndarray, bits: int, loc: str | None = None) -> Requant:
    mult, shift = quantize_multipliers(ratios, loc)
    lo, hi = qrange(bits)
    return Requant(mult, shift, lo, hi)


def check_int64_bound(bound: int, what: str, loc: str | None = None) -> None:
    """Compile-time proof obligation: an intermediate's worst case must fit int64."""
    if bound > INT64_MAX:
        raise CimcError(f"{what} could overflow int64 (bound {bound}); reduce its range", loc)


def check_int32_bound(bound: int, what: str, loc: str | None = None) -> None:
    """Compile-time proof obligation: an accumulator's worst case must fit int32."""
    if bound > INT32_MAX:
        raise CimcError(f"{what} could overflow the int32 accumulator (bound {bound})", loc)
