"""Group-wise weight scales with exact integer arithmetic.

Per-channel codes share one scale down a whole column of K weights; group-wise codes have
one per group of `group` rows, which follows the weights more closely at 4 bits. To keep
every step an integer one, the group scales are expressed against the channel's largest,
`S[n] = max_g s[g, n]`, as multipliers in fixed point:

    m[g, n] = round(s[g, n] / S[n] * 2^F)          (0 .. 2^F)
    acc[n]  = sum_g m[g, n] * (x[rows of g] @ codes[rows of g, n])      exact in int32
    y       = REQ(acc + bias, x_scale * S[n] / 2^F / out_scale)

So the weight the integer model computes with is codes * m / 2^F * S: the golden takes
x @ (codes * m) in one exact integer product, the machine one MVM per group (a window of
its rows) whose partial sum it multiplies by m and adds; the two agree bit for bit
because integer addition is associative. F is the largest of 8, 7, ... at which no sum
can leave int32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cimc.errors import CimcError
from cimc.quant import constants as qc

MAX_FRAC_BITS = 8  # group scales to 1/256 of the channel's: below the int4 step
MIN_FRAC_BITS = 4


@dataclass(frozen=True)
class GroupQuant:
    codes: np.ndarray  # int8 [K, N], each group's codes at its own scale
    scale: np.ndarray  # float64 [N]: S[n] / 2^F, per unit of the accumulator / x_scale
    mult: np.ndarray  # int32 [G, N]: m[g, n]
    bias: np.ndarray  # int32 [N] at the accumulator's scale x_scale * scale


def group_count(k: int, group: int) -> int:
    return math.ceil(k / group)


def expand_rows(mult: np.ndarray, k: int, group: int) -> np.ndarray:
    """[G, N] group multipliers as [K, N] (row r takes its group's)."""
    return np.repeat(np.asarray(mult), group, axis=0)[:k]


def quantize_weight_groups(
    w: np.ndarray,
    bias: np.ndarray,
    x_scale: float,
    group: int,
    bits: int,
    loc: str | None = None,
) -> GroupQuant:
    """Symmetric codes of `bits` bits per group of `group` rows and output channel, and
    the bias at the accumulator's scale."""
    wf = np.asarray(w, np.float64)
    if wf.ndim != 2 or not np.all(np.isfinite(wf)):
        raise CimcError("group-wise weights must be a finite [K, N] matrix", loc)
    if group < 1:
        raise CimcError(f"the weight group size must be positive, got {group}", loc)
    k, n = wf.shape
    top = float((1 << (bits - 1)) - 1)
    groups = group_count(k, group)
    padded = np.zeros((groups * group, n))
    padded[:k] = np.abs(wf)
    s = padded.reshape(groups, group, n).max(axis=1) / top  # [G, N]
    base = s.max(axis=0)
    base = np.where(base > 0, base, 1.0)
    for frac in range(MAX_FRAC_BITS, MIN_FRAC_BITS - 1, -1):
        unit = base / (1 << frac)
        bq = qc.quantize_bias(bias, x_scale, unit, loc)
        if k * 128 * top * (1 << frac) + int(np.abs(bq.astype(np.int64)).max(initial=0)) <= (
            qc.INT32_MAX
        ):
            break
    else:
        raise CimcError(
            f"a reduction of {k} weights cannot take group-wise scales in int32; use "
            "per-channel scales (group size 0)",
            loc,
        )
    mult = np.rint(s / base * (1 << frac)).astype(np.int64)
    # the codes are rounded against the group scale the integer model really has
    eff = expand_rows(mult, k, group) * unit
    safe = np.where(eff > 0, eff, 1.0)
    codes = np.clip(np.rint(wf / safe), -top, top)
    codes = np.where(eff > 0, codes, 0).astype(np.int8)
    return GroupQuant(codes, unit, mult.astype(np.int32), bq)
