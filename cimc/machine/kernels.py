"""Exact integer kernels of the vector unit and the macros, in numpy (int64 intermediates).

These are the interpreter's own implementation of the integer semantics of isa/SPEC.md.
The PyTorch golden (cimc/quant/intops.py) implements the same rules independently; tests
compare the two bit for bit. Nothing here uses float arithmetic except the MVM, where
float32/float64 BLAS is proven exact (see `matmul_exact`).

Kernels raise `KernelError` with a reason; the interpreter adds the instruction location.
"""

from __future__ import annotations

import numpy as np

I64 = np.int64
I64_MIN = np.iinfo(np.int64).min
I64_MAX = np.iinfo(np.int64).max
MAX_SHIFT = 63
# int8 x int8 products are at most 2^14 in magnitude; K of them sum below 2^24 (float32's
# exact-integer limit) for K <= 1024, and below 2^53 (float64's) for K <= 2^39.
F32_EXACT_ROWS = 1024
MAX_INT8_PRODUCT = 128 * 128  # |a * b| for int8 a, b
I32_MIN = int(np.iinfo(np.int32).min)
I32_MAX = int(np.iinfo(np.int32).max)
# Spans of at most this many elements (per-row scalar columns) are measured in Python:
# min / max over a short list beat two ufunc calls (0.8 us vs 2.8 us for two elements).
_FEW = 16


class KernelError(ValueError):
    """An integer-semantics violation (overflow, division by zero...), without location."""


# Inclusive (min, max) of every element of an operand, as exact Python ints. The kernels
# below first bound their result with these; only when the bound does not prove that no
# error can occur do they run the element-wise checks (which then report the first bad
# element). Both paths compute the same int64 values: the bound only skips checks that
# cannot fire. Callers pass a span when they know it without looking at the values (the
# dtype range of a narrow view, an immediate); otherwise it is measured (two reductions).
Span = tuple[int, int]


def span(x: np.ndarray, known: Span | None = None) -> Span:
    if known is not None:
        return known
    x = np.asarray(x)
    if x.size <= _FEW:
        values = x.ravel().tolist()
        return (min(values), max(values)) if values else (0, 0)
    return int(np.minimum.reduce(x, axis=None)), int(np.maximum.reduce(x, axis=None))


def _fits(lo: int, hi: int) -> bool:
    return lo >= I64_MIN and hi <= I64_MAX


def sum_span(a: Span, b: Span) -> Span:
    return a[0] + b[0], a[1] + b[1]


def difference_span(a: Span, b: Span) -> Span:
    return a[0] - b[1], a[1] - b[0]


def product_span(a: Span, b: Span) -> Span:
    corners = (a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1])
    return min(corners), max(corners)


def _shift_ok(s: Span) -> bool:
    return s[0] >= 0 and s[1] <= MAX_SHIFT


def _first(mask: np.ndarray, *arrays: np.ndarray) -> str:
    """Describe the first offending element: its (row, col) index and operand values.

    The mask may come from a broadcast operand (a 1xC shift row): index in the full shape.
    """
    shape = np.broadcast_shapes(np.shape(mask), *(np.shape(a) for a in arrays))
    index = tuple(int(i) for i in np.argwhere(np.broadcast_to(mask, shape))[0])
    values = ", ".join(str(np.broadcast_to(a, shape)[index]) for a in arrays)
    return f"at element {index} (operands {values})"


def _check(bad: np.ndarray, reason: str, *arrays: np.ndarray) -> None:
    if bad.any():
        raise KernelError(f"{reason} {_first(bad, *arrays)}")


def add(a: np.ndarray, b: np.ndarray, sa: Span | None = None, sb: Span | None = None) -> np.ndarray:
    if _fits(*sum_span(span(a, sa), span(b, sb))):
        return a + b
    r = a + b
    _check(((a ^ r) & (b ^ r)) < 0, "int64 overflow in add", a, b)
    return r


def sub(a: np.ndarray, b: np.ndarray, sa: Span | None = None, sb: Span | None = None) -> np.ndarray:
    if _fits(*difference_span(span(a, sa), span(b, sb))):
        return a - b
    r = a - b
    _check(((a ^ b) & (a ^ r)) < 0, "int64 overflow in sub", a, b)
    return r


def mul(a: np.ndarray, b: np.ndarray, sa: Span | None = None, sb: Span | None = None) -> np.ndarray:
    """Product in int64; wraparound is detected by dividing back."""
    if _fits(*product_span(span(a, sa), span(b, sb))):
        return a * b
    r = a * b
    safe = np.where(a == 0, 1, a)
    wrapped = (a != 0) & (r // safe != b)
    # -1 * INT64_MIN wraps to INT64_MIN and divides back "correctly": flag it explicitly.
    wrapped |= ((a == -1) & (b == I64_MIN)) | ((b == -1) & (a == I64_MIN))
    _check(wrapped, "int64 overflow in multiply", a, b)
    return r


def _check_shift(s: np.ndarray) -> None:
    _check((s < 0) | (s > MAX_SHIFT), f"shift amount outside [0, {MAX_SHIFT}]", s)


def shl(a: np.ndarray, s: np.ndarray, sa: Span | None = None, ss: Span | None = None) -> np.ndarray:
    (alo, ahi), shifts = span(a, sa), span(s, ss)
    if _shift_ok(shifts) and I64_MIN >> shifts[1] <= alo and ahi <= I64_MAX >> shifts[1]:
        return a << s
    _check_shift(s)
    r = a << s
    _check((r >> s) != a, "int64 overflow in shl", a, s)
    return r


def rshr(
    x: np.ndarray, s: np.ndarray, sx: Span | None = None, ss: Span | None = None
) -> np.ndarray:
    """Rounding shift right, round half toward +inf: (x + 2^(s-1)) >> s; s = 0 is identity."""
    if _rshr_safe(span(x, sx), span(s, ss)):
        return _rshr(x, s)
    _check_shift(s)
    s = np.broadcast_to(s, np.broadcast_shapes(np.shape(x), np.shape(s)))
    half = np.where(s > 0, np.left_shift(I64(1), np.maximum(s - 1, 0)), 0).astype(I64)
    return add(x, half) >> s


def _rshr_safe(x: Span, s: Span) -> bool:
    """No error possible: shifts in range and x + 2^(s-1) stays in int64."""
    return _shift_ok(s) and x[1] + ((1 << (s[1] - 1)) if s[1] > 0 else 0) <= I64_MAX


def _rshr(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """(x + 2^(s-1)) >> s without checks; the rounding term is built at s's own shape."""
    s = np.asarray(s)
    if s.ndim == 0:  # one shift for all (an immediate): Python ints, no temporaries
        v = int(s)
        return (x + (1 << (v - 1))) >> v if v > 0 else x + 0  # a new array, as for v > 0
    half = np.where(s > 0, np.left_shift(I64(1), np.maximum(s - 1, 0)), 0).astype(I64)
    return (x + half) >> s


def req(
    a: np.ndarray,
    m: np.ndarray,
    s: np.ndarray,
    zp: np.ndarray,
    lo: int,
    hi: int,
    spans: tuple[Span | None, ...] = (None, None, None, None),
) -> np.ndarray:
    """clamp(RSHR(a * m, s) + zp, lo, hi), every step exact in int64.

    `spans` bounds a, m, s and zp when known without reading them."""
    sa, sm, ss, sz = (span(v, k) for v, k in zip((a, m, s, zp), spans, strict=True))
    # A view's dtype range is a loose bound (an i8 shift row spans -128..127, beyond the
    # legal 0..63): measure what was only bounded before paying for the checked steps;
    # the small per-channel operands first, the full-size `a` only if still needed.
    if not _req_safe(sa, sm, ss, sz):
        sm, ss, sz = (
            span(v) if k is not None else bound
            for v, k, bound in zip((m, s, zp), spans[1:], (sm, ss, sz), strict=True)
        )
        if not _req_safe(sa, sm, ss, sz) and spans[0] is not None:
            sa = span(a)
    if _req_safe(sa, sm, ss, sz):
        shifted = _rshr(a if sm == (1, 1) else a * m, s)  # _rshr returns a new array
        return _clamp(shifted if sz == (0, 0) else shifted + zp, lo, hi)
    return _clamp(add(rshr(mul(a, m, sa, sm), s, None, ss), zp, None, sz), lo, hi)


def _req_safe(sa: Span, sm: Span, ss: Span, sz: Span) -> bool:
    """No step of REQ can fail: the product, its rounding and the zero-point add stay in
    int64 and the shifts are in range (RSHR maps [x0, x1] into [min(x0, 0), max(x1, 0)])."""
    p = product_span(sa, sm)
    return _fits(*p) and _rshr_safe(p, ss) and _fits(min(p[0], 0) + sz[0], max(p[1], 0) + sz[1])


def _clamp(x: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """np.clip's value (min(max(x, lo), hi)) without its wrapper's per-call overhead."""
    low = np.maximum(x, lo)
    return np.minimum(low, hi, out=low) if low.shape else np.minimum(low, hi)


def div(a: np.ndarray, b: np.ndarray, sa: Span | None = None, sb: Span | None = None) -> np.ndarray:
    """Floor division by a positive divisor."""
    if span(b, sb)[0] <= 0:
        _check(b <= 0, "divisor must be > 0", a, b)
    return a // b


def isqrt(a: np.ndarray, sa: Span | None = None) -> np.ndarray:
    """floor(sqrt(a)) for a >= 0, exact: a float estimate corrected with integer tests."""
    if span(a, sa)[0] < 0:
        _check(a < 0, "isqrt of a negative value", a)
    r = np.floor(np.sqrt(a.astype(np.float64))).astype(I64)
    r = np.minimum(r, 3037000499)  # floor(sqrt(2^63 - 1)): keeps r * r in int64
    for _ in range(4):
        # r too big: r * r > a  <=>  r > a // r  (r > 0).
        too_big = (r > 0) & (r > a // np.maximum(r, 1))
        # r too small: (r + 1)^2 <= a  <=>  r + 1 <= a // (r + 1).
        too_small = ~too_big & (r + 1 <= a // (r + 1))
        if not (too_big.any() or too_small.any()):
            return r
        r = r - too_big + too_small
    raise AssertionError("isqrt correction did not converge")  # unreachable for int64


def lut(a: np.ndarray, table: np.ndarray, sa: Span | None = None) -> np.ndarray:
    """table[a + 128] for int8 a; table is a flat array of 256 entries."""
    alo, ahi = span(a, sa)
    if alo < -128 or ahi > 127:
        _check((a < -128) | (a > 127), "lut index outside int8", a)
    return table.reshape(-1)[a + 128]


def rsum(a: np.ndarray, sa: Span | None = None) -> np.ndarray:
    """Row sums (R x C -> R x 1) in int64, overflow checked."""
    r = a.sum(axis=1, keepdims=True, dtype=I64)
    alo, ahi = span(a, sa)
    if max(-alo, ahi) * a.shape[1] <= I64_MAX:  # no row can leave int64
        return r
    big = np.abs(a.astype(np.float64)).sum(axis=1, keepdims=True) >= 2.0**62
    if big.any():  # only possible with i64 inputs: redo those rows exactly
        for row in np.flatnonzero(big):
            exact = sum(int(v) for v in a[row])
            if not I64_MIN <= exact <= I64_MAX:
                raise KernelError(f"int64 overflow in rsum at row {row}")
    return r


def rmax(a: np.ndarray) -> np.ndarray:
    return a.max(axis=1, keepdims=True)


def sel(cond: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(cond != 0, a, b)


def matmul_exact(x: np.ndarray, w: np.ndarray, dtype: type = I64) -> np.ndarray:
    """Exact result of int8 (n x r) @ int8 (r x c) via BLAS in float32 or float64.

    `x` and `w` may already be float arrays holding int8 values (the interpreter keeps a
    float copy of each macro so that an MVM does not convert its weights every time). The
    result is returned as `dtype`; |sum| <= r * 2^14 <= 2^30 for r <= 65536 rows (the arch
    limit), so int32 is always wide enough.
    """
    rows = x.shape[1]
    ftype = np.float32 if rows <= F32_EXACT_ROWS else np.float64
    return np.matmul(x.astype(ftype, copy=False), w.astype(ftype, copy=False)).astype(dtype)


def room_in_i32(acc: np.ndarray, bound: int) -> bool:
    """Can every element of the int32 array `acc` take an addend of magnitude <= bound
    without leaving int32? Two reductions of acc (mvm.acc's running sums stay far from
    the limits, so the in-place int32 add is the rule and the int64 check the exception)."""
    low, high = span(acc)
    return low - bound >= I32_MIN and high + bound <= I32_MAX


def unpack_int4(cells: np.ndarray) -> np.ndarray:
    """[r x c] cells holding two's-complement int4 pairs -> [r x 2c] weights: column 2j is
    the low half of cell j, column 2j + 1 the high half (sign-extended; float in, float
    out: the values are small integers, exact)."""
    b = cells.astype(np.int64) & 0xFF
    lo = ((b & 0xF) ^ 8) - 8
    hi = ((b >> 4) ^ 8) - 8
    out = np.empty((cells.shape[0], 2 * cells.shape[1]), dtype=cells.dtype)
    out[:, 0::2] = lo
    out[:, 1::2] = hi
    return out


def pack_int4(weights: np.ndarray) -> np.ndarray:
    """The inverse of unpack_int4: [r x n] values in -8..7 -> [r x ceil(n/2)] int8 cells (an
    odd n pads the last cell's high half with 0)."""
    w = np.asarray(weights, np.int64)
    if w.size and (w.min() < -8 or w.max() > 7):
        raise ValueError("int4 weights must lie in -8..7")
    if w.shape[1] % 2:
        w = np.concatenate([w, np.zeros((w.shape[0], 1), np.int64)], axis=1)
    byte = (w[:, 0::2] & 0xF) | ((w[:, 1::2] & 0xF) << 4)
    return byte.astype(np.uint8).view(np.int8)
