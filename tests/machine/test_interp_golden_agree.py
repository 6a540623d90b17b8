"""The interpreter's numpy kernels and the golden's torch kernels agree bit for bit.

The two are written independently (cimc/machine/kernels.py, cimc/quant/intops.py); this test
is what makes "same semantics" a checked fact rather than a hope.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cimc.machine import kernels as k

intops = pytest.importorskip("cimc.quant.intops")

RNG = np.random.default_rng(11)
EDGES = np.array([0, 1, -1, 2, -2, 127, -128, 32767, -32768, 2**31 - 1, -(2**31)], np.int64)


def _values(n: int, bits: int) -> np.ndarray:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    v = RNG.integers(lo, hi, n, endpoint=True, dtype=np.int64)
    edges = EDGES
    return np.concatenate([v, edges[(edges >= lo) & (edges <= hi)]])


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def test_rshr_agrees() -> None:
    x = _values(4000, 40)[:, None]
    s = np.arange(0, 63)[None, :]
    np.testing.assert_array_equal(k.rshr(x, s), intops.rshr(_t(x), _t(s)).numpy())


def test_req_agrees() -> None:
    a = _values(3000, 32)[:, None]
    m = RNG.integers(1 << 30, 1 << 31, (1, 8), dtype=np.int64)
    s = RNG.integers(20, 40, (1, 8), dtype=np.int64)
    got = k.req(a, m, s, np.int64(-3), -128, 127)
    want = intops.req(_t(a), _t(m), _t(s), -3, -128, 127).numpy()
    np.testing.assert_array_equal(got, want)


def test_div_agrees() -> None:
    a = _values(3000, 63)[:, None]
    b = np.array([[1, 2, 3, 7, 255, 1 << 20, (1 << 62) + 1]], np.int64)
    np.testing.assert_array_equal(k.div(a, b), intops.div_floor(_t(a), _t(b)).numpy())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, (1 << 63) - 1), min_size=1, max_size=50))
def test_isqrt_agrees(values: list[int]) -> None:
    a = np.array(values, np.int64)
    np.testing.assert_array_equal(k.isqrt(a), intops.isqrt(_t(a)).numpy())


def test_isqrt_near_squares_agree() -> None:
    r = RNG.integers(0, 3037000499, 5000, dtype=np.int64)
    a = np.concatenate([r * r, r * r - 1, np.maximum(r * r + r, 0)])
    a = a[a >= 0]
    np.testing.assert_array_equal(k.isqrt(a), intops.isqrt(_t(a)).numpy())


def test_lut_and_reductions_agree() -> None:
    a = RNG.integers(-128, 128, (50, 40), dtype=np.int64)
    table = RNG.integers(-(1 << 20), 1 << 20, 256, dtype=np.int64)
    np.testing.assert_array_equal(k.lut(a, table), intops.lut8(_t(a), _t(table)).numpy())
    big = _values(1989, 32).reshape(40, 50)
    np.testing.assert_array_equal(k.rsum(big), intops.rsum(_t(big)).numpy())
    np.testing.assert_array_equal(k.rmax(big), intops.rmax(_t(big)).numpy())


@pytest.mark.parametrize("rows", [1, 128, 1024, 1500])
def test_matmul_agrees(rows: int) -> None:
    x = RNG.integers(-128, 128, (17, rows), dtype=np.int8)
    w = RNG.integers(-128, 128, (rows, 33), dtype=np.int8)
    x[0] = -128
    w[:, 0] = -128
    got = k.matmul_exact(x, w)
    want = intops.imatmul(_t(x.astype(np.int64)), _t(w.astype(np.int64))).numpy()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, x.astype(np.int64) @ w.astype(np.int64))
