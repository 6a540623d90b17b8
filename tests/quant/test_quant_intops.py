"""Integer primitives against hand-computed values, edge cases and exact Python ints."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cimc.quant import intops as io
from cimc.quant.constants import quantize_multiplier

I64 = torch.int64
INT64_MAX = (1 << 63) - 1


def t(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=I64)


def test_rshr_rounds_half_toward_plus_infinity() -> None:
    x = t([5, -5, 6, -6, 7, -7, -3, -1, 1, 0])
    # x / 2 = 2.5 -2.5 3 -3 3.5 -3.5 -1.5 -0.5 0.5 0
    assert io.rshr(x, 1).tolist() == [3, -2, 3, -3, 4, -3, -1, 0, 1, 0]
    # x / 4 = -1.25 -1.75 -2.5 -2.25 -2.75: floor((x + 2) / 4)
    assert io.rshr(t([-5, -7, -10, -9, -11]), 2).tolist() == [-1, -2, -2, -2, -3]


def test_rshr_zero_and_per_channel_shift() -> None:
    x = t([-7, 7, 100, -100])
    assert io.rshr(x, 0).tolist() == [-7, 7, 100, -100]
    s = t([0, 1, 3, 62])
    assert io.rshr(x, s).tolist() == [-7, 4, 13, 0]
    big = t([(1 << 62) - 1, -(1 << 62), 1 << 61])
    assert io.rshr(big, 62).tolist() == [1, -1, 1]  # 0.99.. -> 1, -1 -> -1, 0.5 -> 1


def test_req_clamps_and_uses_int64_product() -> None:
    m, s = quantize_multiplier(0.5)
    x = t([300, -300, 3, -3, 1, -1])
    assert io.req(x, m, s, 0, -127, 127).tolist() == [127, -127, 2, -1, 1, 0]
    assert io.req(x, m, s, 10, -127, 127).tolist() == [127, -127, 12, 9, 11, 10]
    # max operands: (2^31 - 1)^2 needs 62 bits; must not wrap.
    big = (1 << 31) - 1
    out = io.req(t([big, -big - 1]), big, 62, 0, -(1 << 40), 1 << 40)
    expect = [math.floor(Fraction(v * big, 1 << 62) + Fraction(1, 2)) for v in (big, -big - 1)]
    assert out.tolist() == expect == [1, -1]


def test_req_per_channel() -> None:
    x = torch.tensor([[10, 10, 10], [-10, -10, -10]], dtype=I64)
    mult = t([1 << 30, 3 << 29, 1 << 30])  # 0.5, 0.75, 0.25 with shifts 31, 31, 32
    shift = t([31, 31, 32])
    assert io.req(x, mult, shift, 0, -127, 127).tolist() == [[5, 8, 3], [-5, -7, -2]]


def test_div_floor_of_negatives() -> None:
    a = t([7, -7, -1, 0, -6, -(1 << 62), INT64_MAX])
    assert io.div_floor(a, 2).tolist() == [3, -4, -1, 0, -3, -(1 << 61), INT64_MAX // 2]
    assert io.div_floor(t([-7, 7]), t([3, 3])).tolist() == [-3, 2]
    with pytest.raises(ValueError, match="positive divisor"):
        io.div_floor(a, 0)
    with pytest.raises(ValueError, match="positive divisor"):
        io.div_floor(a, t([1, 1, 1, 1, 1, 1, -1]))


def test_isqrt_near_perfect_squares_and_top_of_range() -> None:
    roots = [0, 1, 2, 3, 1000, (1 << 31) - 1, 1 << 31, 3037000499]
    vals, expect = [], []
    for r in roots:
        for v in (r * r - 1, r * r, r * r + 1):
            if 0 <= v <= INT64_MAX:
                vals.append(v)
                expect.append(math.isqrt(v))
    vals += [1 << 62, (1 << 62) - 1, INT64_MAX, INT64_MAX - 1]
    expect += [1 << 31, (1 << 31) - 1, 3037000499, 3037000499]
    assert io.isqrt(t(vals)).tolist() == expect


def test_isqrt_rejects_negative() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        io.isqrt(t([4, -1]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, INT64_MAX), min_size=1, max_size=20))
def test_isqrt_matches_math_isqrt(values: list[int]) -> None:
    assert io.isqrt(t(values)).tolist() == [math.isqrt(v) for v in values]


def test_lut8_indexing_and_checks() -> None:
    table = torch.arange(256, dtype=I64) * 3 - 5
    assert io.lut8(t([-128, -1, 0, 127]), table).tolist() == [-5, 376, 379, 760]
    with pytest.raises(ValueError, match="int8 range"):
        io.lut8(t([128]), table)
    with pytest.raises(ValueError, match="256-entry"):
        io.lut8(t([0]), table[:255])


def test_rsum_rmax() -> None:
    x = torch.tensor([[1 << 40, 1 << 40, -3], [-5, -9, -2]], dtype=I64)
    assert io.rsum(x).tolist() == [[(1 << 41) - 3], [-16]]
    assert io.rmax(x, keepdim=False).tolist() == [1 << 40, -2]


def _exact_matmul(a: torch.Tensor, b: torch.Tensor) -> list[list[int]]:
    al, bl = a.tolist(), b.tolist()
    return [
        [sum(x * y for x, y in zip(row, col, strict=True)) for col in zip(*bl, strict=True)]
        for row in al
    ]


@pytest.mark.parametrize(
    ("k", "lo", "hi"),
    [(1024, -128, 128), (4096, -128, 128), (64, -(1 << 25), 1 << 25)],
    ids=["float32-exact", "float64-exact", "int64-path"],
)
def test_imatmul_is_exact_in_every_regime(k: int, lo: int, hi: int) -> None:
    g = torch.Generator().manual_seed(k)
    a = torch.randint(lo, hi, (3, k), generator=g, dtype=I64)
    b = torch.randint(lo, hi, (k, 4), generator=g, dtype=I64)
    a[0] = lo  # extreme rows: the largest possible partial sums
    b[:, 0] = lo
    assert io.imatmul(a, b).tolist() == _exact_matmul(a, b)


def test_imatmul_batched_broadcast() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.randint(-128, 128, (2, 3, 5, 16), generator=g, dtype=I64)
    b = torch.randint(-128, 128, (2, 3, 16, 7), generator=g, dtype=I64)
    out = io.imatmul(a, b)
    assert torch.equal(out, torch.matmul(a, b))  # torch's int64 matmul as reference


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-(1 << 61), (1 << 61) - 1), min_size=1, max_size=12),
    st.integers(0, 62),
)
def test_rshr_matches_rational_rounding(xs: list[int], s: int) -> None:
    got = io.rshr(t(xs), s).tolist()
    assert got == [math.floor(Fraction(x, 1 << s) + Fraction(1, 2)) for x in xs]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-(1 << 62), 1 << 62), min_size=1, max_size=12),
    st.integers(1, 1 << 40),
)
def test_div_floor_matches_python(xs: list[int], d: int) -> None:
    assert io.div_floor(t(xs), d).tolist() == [x // d for x in xs]


def test_imatmul_stays_exact_when_float32_precision_is_lowered() -> None:
    g = torch.Generator().manual_seed(5)
    a = torch.randint(-128, 128, (4, 512), generator=g, dtype=I64)
    b = torch.randint(-128, 128, (512, 3), generator=g, dtype=I64)
    matmul_cfg = getattr(torch.backends.mkldnn, "matmul", None)
    if matmul_cfg is None or not hasattr(matmul_cfg, "fp32_precision"):
        pytest.skip("this torch has no per-backend float32 precision switch")
    saved = matmul_cfg.fp32_precision
    try:
        matmul_cfg.fp32_precision = "bf16"
        assert io.imatmul(a, b).tolist() == _exact_matmul(a, b)
    finally:
        matmul_cfg.fp32_precision = saved
