"""Compile-time constants: multipliers, scales, weight codes, tables."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cimc.errors import CimcError
from cimc.quant import constants as qc
from cimc.quant import intops as io
from cimc.quant import tables


def test_quantize_multiplier_hand_values() -> None:
    assert qc.quantize_multiplier(1.0) == (1 << 30, 30)
    assert qc.quantize_multiplier(0.5) == (1 << 30, 31)
    assert qc.quantize_multiplier(0.75) == (3 << 29, 31)
    assert qc.quantize_multiplier(3.0) == (3 << 29, 29)
    # 1 - 2^-40 rounds up to 2^31 and renormalizes to 1.0
    assert qc.quantize_multiplier(1 - 2.0**-40) == (1 << 30, 30)


@pytest.mark.parametrize("ratio", [2.0**30, 1e12, 2.0**-33, 0.0, -0.5, math.nan, math.inf])
def test_quantize_multiplier_rejects_out_of_range(ratio: float) -> None:
    with pytest.raises(CimcError, match="ratio"):
        qc.quantize_multiplier(ratio, loc="node fc1")


def test_quantize_multiplier_range_edges() -> None:
    with pytest.raises(CimcError):  # rounds up to 2^30, which needs shift 0
        qc.quantize_multiplier(2.0**30 * (1 - 2.0**-40))
    mult, shift = qc.quantize_multiplier(2.0**29)
    assert (mult, shift) == (1 << 30, 1)
    mult, shift = qc.quantize_multiplier(2.0**-32)
    assert (mult, shift) == (1 << 30, 62)


@settings(max_examples=250, deadline=None)
@given(
    st.floats(min_value=2.0**-32, max_value=2.0**29, allow_nan=False, exclude_max=True),
    st.lists(st.integers(-(1 << 31), (1 << 31) - 1), min_size=1, max_size=16),
    st.sampled_from([(-127, 127), (-32767, 32767), (-(1 << 40), 1 << 40)]),
)
def test_req_matches_exact_rational_reference(ratio: float, xs: list[int], rng: tuple) -> None:
    mult, shift = qc.quantize_multiplier(ratio)
    assert 1 << 30 <= mult < 1 << 31 and 1 <= shift <= 62
    # the multiplier is the nearest M / 2^s: relative error at most 2^-31
    assert abs(Fraction(mult, 1 << shift) - Fraction(ratio)) <= Fraction(ratio) / (1 << 31)
    lo, hi = rng
    got = io.req(torch.tensor(xs, dtype=torch.int64), mult, shift, 0, lo, hi).tolist()
    exact = [math.floor(Fraction(x * mult, 1 << shift) + Fraction(1, 2)) for x in xs]
    assert got == [min(max(v, lo), hi) for v in exact]
    # and the rounded value is within 1/2 + |x| * ratio * 2^-31 of the real product
    for x, v in zip(xs, exact, strict=True):
        assert abs(v - Fraction(x) * Fraction(ratio)) <= Fraction(1, 2) + abs(x) * Fraction(
            ratio
        ) / (1 << 31)


def test_shared_shift_multipliers() -> None:
    mult, shift = qc.shared_shift_multipliers(np.array([0.5, -0.25, 0.0]))
    assert shift == 31 and mult.tolist() == [1 << 30, -(1 << 29), 0]
    mult, shift = qc.shared_shift_multipliers(np.array([0.0, 0.0]))
    assert mult.tolist() == [0, 0] and shift == 1
    mult, shift = qc.shared_shift_multipliers(np.array([100.0, 1e-3]))
    assert 1 << 30 <= mult[0] < 1 << 31
    assert abs(mult[1] / 2.0**shift - 1e-3) <= 2.0 ** -(shift + 1)


def test_weight_per_channel_codes_and_zero_channel() -> None:
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.05, (64, 5)).astype(np.float32)
    w[:, 2] = 0.0
    w[:, 4] *= 100
    wq = qc.quantize_weight_per_channel(w, axis=1)
    assert wq.codes.dtype == np.int8 and wq.codes.shape == w.shape
    assert np.abs(wq.codes).max(axis=0).tolist() == [127, 127, 0, 127, 127]
    assert wq.scale[2] == min(wq.scale[[0, 1, 3, 4]])  # zero channel: smallest scale
    err = np.abs(wq.codes * wq.scale - w)
    assert np.all(err <= wq.scale / 2 + 1e-12)
    again = qc.quantize_weight_per_channel(w.copy(), axis=1)
    assert np.array_equal(again.codes, wq.codes) and np.array_equal(again.scale, wq.scale)


def test_activation_scale_and_calibration() -> None:
    x = np.concatenate([np.linspace(-1, 1, 100_001), [50.0]])
    assert qc.calibration_range(x) == 50.0
    r = qc.calibration_range(x, "percentile", 99.9)
    assert 0.99 < r < 1.0
    assert qc.activation_scale(50.0, 8) == 50.0 / 127
    assert qc.activation_scale(50.0, 16) == 50.0 / 32767
    assert qc.activation_scale(0.0, 8) == 1 / 127
    with pytest.raises(CimcError, match="calibration method"):
        qc.calibration_range(x, "mse")
    with pytest.raises(CimcError, match="int8 or int16"):
        qc.activation_scale(1.0, 4)


def test_quantize_bias_overflow_is_an_error() -> None:
    b = qc.quantize_bias(np.array([1.0, -2.0]), 0.01, np.array([0.001, 0.002]))
    assert b.tolist() == [100_000, -100_000]
    with pytest.raises(CimcError, match="int32"):
        qc.quantize_bias(np.array([1e6]), 1e-3, np.array([1e-3]), loc="fc")


def test_lut8_gelu_known_entries() -> None:
    table = tables.lut8_table("gelu", 0.05, 0.05, 8)
    assert table.dtype == np.int8 and table.shape == (256,)
    # c = 20 -> x = 1.0, gelu = 0.841345 -> 16.83 -> 17; c = -20 -> -0.158655 -> -3.17 -> -3
    assert table[128 + 20] == 17 and table[128 - 20] == -3 and table[128] == 0
    assert table[255] == 127  # 6.35 / 0.05 = 127


def test_lut8_named_functions_within_half_step() -> None:
    x = torch.arange(-128, 128, dtype=torch.float64) * 0.04
    refs = {
        "gelu": torch.nn.functional.gelu(x),
        "gelu_tanh": torch.nn.functional.gelu(x, approximate="tanh"),
        "silu": torch.nn.functional.silu(x),
        "sigmoid": torch.sigmoid(x),
        "tanh": torch.tanh(x),
        "erf": torch.erf(x),
        "exp": torch.exp(x),
    }
    for name, ref in refs.items():
        s_out = float(ref.abs().max()) / 32767
        table = tables.lut8_table(name, 0.04, s_out, 16)
        err = np.abs(table * s_out - ref.numpy()) / s_out
        assert err.max() <= 0.5 + 1e-6, name


def test_lut8_callable_and_bad_name() -> None:
    table = tables.lut8_table(lambda v: v * v, 0.1, 0.01, 16)
    assert table[128 + 10] == 100 and table[0] == 16384
    with pytest.raises(CimcError, match="no LUT8 recipe"):
        tables.lut8_table("softplus", 0.1, 0.1, 8)


def test_exp_tables() -> None:
    step = 0.0123
    hi, lo = tables.exp_tables(step)
    assert hi.dtype == np.int32 and hi[0] == lo[0] == 1 << 30
    assert np.all(np.diff(hi.astype(np.int64)) <= 0) and np.all(np.diff(lo.astype(np.int64)) <= 0)
    j = np.arange(256)
    assert np.abs(hi - np.exp(-256 * j * step) * 2.0**30).max() <= 0.5 + 1e-3
    assert np.abs(lo - np.exp(-j * step) * 2.0**30).max() <= 0.5 + 1e-3
    # the two-level product reproduces exp(-a * step) for a 16-bit difference a
    a = np.array([0, 1, 255, 256, 257, 1000, 65535])
    prod = hi[a // 256].astype(object) * lo[a % 256].astype(object)
    e = np.array([(int(v) + (1 << 29)) >> 30 for v in prod], dtype=np.float64)
    assert np.abs(e - np.exp(-a * step) * 2.0**30).max() <= 2.0


def test_rope_tables_exact_and_from_float() -> None:
    cos, sin = tables.rope_tables(64, 16, 10000.0)
    pos = np.arange(64)[:, None]
    inv = 10000.0 ** (-np.arange(0, 16, 2) / 16)
    ang = np.concatenate([pos * inv, pos * inv], axis=1)
    assert np.abs(cos - np.cos(ang) * 16384).max() <= 0.5 + 1e-6
    assert np.abs(sin - np.sin(ang) * 16384).max() <= 0.5 + 1e-6
    assert cos[0].tolist() == [16384] * 16 and sin[0].tolist() == [0] * 16
    assert np.array_equal(tables.rope_q14(np.cos(ang)), cos)
    with pytest.raises(CimcError, match="outside"):
        tables.rope_q14(np.array([1.5]))
