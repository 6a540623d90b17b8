"""Integer primitives of the quantized model, as torch functions on int64 tensors.

These are the integer golden's kernels. The machine interpreter has its own numpy kernels,
written independently; both follow the definitions in isa/SPEC.md ("Integer semantics")
and must agree bit for bit. Every function here is defined by value: no float rounding
ever reaches a result (float BLAS is used in `imatmul` only where it is provably exact).

All tensors are int64 on entry and exit; narrower storage types (int8/int16/int32) are the
backend's business, and the plans guarantee the values fit them.
"""

from __future__ import annotations

import torch

# Values at or beyond these magnitudes cannot be carried exactly by a float mantissa.
_F32_EXACT = 1 << 24
_F64_EXACT = 1 << 53
INT64_MIN = -(1 << 63)

Shift = torch.Tensor | int


def _as_i64(v: torch.Tensor | int) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v.to(torch.int64)
    return torch.tensor(v, dtype=torch.int64)


def rshr(x: torch.Tensor, s: Shift) -> torch.Tensor:
    """RSHR(x, s) = (x + 2^(s-1)) >> s: rounding right shift, ties toward +inf.

    `s` is an int or an int tensor broadcastable to `x` (per-channel shifts); s == 0 leaves
    x unchanged; 0 <= s <= 62. The shift is arithmetic (floor), so -2.5 rounds to -2.
    """
    s64 = _as_i64(s)
    half = torch.bitwise_left_shift(torch.ones_like(s64), (s64 - 1).clamp(min=0))
    half = torch.where(s64 > 0, half, torch.zeros_like(half))
    return torch.bitwise_right_shift(x + half, s64)


def clamp(x: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Saturate to [lo, hi] (both inclusive)."""
    return x.clamp(min=lo, max=hi)


def req(
    x: torch.Tensor, mult: torch.Tensor | int, s: Shift, zp: int, lo: int, hi: int
) -> torch.Tensor:
    """REQ(x, M, s, zp, lo, hi) = clamp(RSHR(x*M, s) + zp, lo, hi), product in int64.

    `mult` and `s` are scalars or tensors broadcastable to x (per-channel on the last axis).
    The caller guarantees |x*M| < 2^63 (plans check it at compile time).
    """
    return clamp(rshr(x * _as_i64(mult), s) + zp, lo, hi)


def div_floor(a: torch.Tensor, b: torch.Tensor | int) -> torch.Tensor:
    """DIV(a, b) = floor(a / b) for b >= 1, exact for all int64 a (floor, not truncation)."""
    b64 = _as_i64(b)
    if bool((b64 < 1).any()):
        raise ValueError("DIV needs a positive divisor")
    return torch.div(a, b64, rounding_mode="floor")


def isqrt(x: torch.Tensor) -> torch.Tensor:
    """ISQRT(x) = floor(sqrt(x)) for every int64 x >= 0, by the digit-by-digit method.

    Pure integer arithmetic (32 steps of compare/subtract/shift), so it is exact up to
    2^63 - 1 by construction; no float estimate is involved.
    """
    if bool((x < 0).any()):
        raise ValueError("ISQRT needs a non-negative operand")
    rem = x.clone()
    root = torch.zeros_like(x)
    bit = 1 << 62
    while bit:
        trial = root + bit
        take = rem >= trial
        rem = torch.where(take, rem - trial, rem)
        root = torch.where(take, (root >> 1) + bit, root >> 1)
        bit >>= 2
    return root


def lut8(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """LUT8(x, T) = T[x + 128] for int8 codes x in [-128, 127]; T has 256 entries."""
    if table.shape != (256,):
        raise ValueError(f"LUT8 needs a 256-entry table, got shape {tuple(table.shape)}")
    if bool(((x < -128) | (x > 127)).any()):
        raise ValueError("LUT8 operand outside the int8 range [-128, 127]")
    return _as_i64(table)[x + 128]


def rsum(x: torch.Tensor, dim: int = -1, keepdim: bool = True) -> torch.Tensor:
    """RSUM: exact int64 sum over one axis."""
    return x.sum(dim=dim, keepdim=keepdim, dtype=torch.int64)


def rmax(x: torch.Tensor, dim: int = -1, keepdim: bool = True) -> torch.Tensor:
    """RMAX: maximum over one axis."""
    return x.amax(dim=dim, keepdim=keepdim)


def _absmax(x: torch.Tensor) -> int:
    return int(x.abs().max()) if x.numel() else 0


def _f32_matmul_is_ieee() -> bool:
    """False when a user lowered float32 matmul precision (bf16/tf32 paths are not exact)."""
    try:
        if torch.get_float32_matmul_precision() != "highest":
            return False
        mkldnn = torch.backends.mkldnn
        levels = (torch.backends, mkldnn, getattr(mkldnn, "matmul", None))
        return all(getattr(lv, "fp32_precision", "none") in ("none", "ieee") for lv in levels)
    except (RuntimeError, AttributeError):  # mixed legacy/new precision APIs: play safe
        return False


def imatmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact integer matmul (torch.matmul broadcasting), int64 result.

    The MVM of the macros: int8 x int8 -> int32 accumulate. A float BLAS carries it only
    where every partial sum is provably an exactly representable integer:
    K * max|a| * max|b| <= 2^24 for float32, <= 2^53 for float64; otherwise int64 matmul.
    Any summation order then gives the exact sum, so the result does not depend on BLAS.
    """
    k = a.shape[-1]
    bound = k * _absmax(a) * _absmax(b)
    if bound <= _F32_EXACT and _f32_matmul_is_ieee():
        out = torch.matmul(a.to(torch.float32), b.to(torch.float32))
    elif bound <= _F64_EXACT:
        out = torch.matmul(a.to(torch.float64), b.to(torch.float64))
    else:
        return torch.matmul(a.to(torch.int64), b.to(torch.int64))
    return out.to(torch.int64)
