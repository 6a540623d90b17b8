"""Weights and tables quantized a block of rows at a time give the codes and scales of the
whole-tensor formulas (cimc/quant/constants.py), on any block size."""

from __future__ import annotations

import numpy as np
import pytest

from cimc.errors import CimcError
from cimc.quant import constants as qc

rng = np.random.default_rng(3)


def _whole_per_channel(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """The formula on the whole tensor at once, in float64."""
    wf = np.asarray(w, np.float64)
    ax = axis % wf.ndim
    other = tuple(i for i in range(wf.ndim) if i != ax)
    scale = np.abs(wf).max(axis=other) / 127.0
    nonzero = scale[scale > 0]
    scale = np.where(scale > 0, scale, float(nonzero.min()) if nonzero.size else 1.0)
    shape = [1] * wf.ndim
    shape[ax] = -1
    codes = np.clip(np.rint(wf / scale.reshape(shape)), -127, 127).astype(np.int8)
    return codes, scale


@pytest.mark.parametrize("block", [1, 7, 64, 1 << 20])
@pytest.mark.parametrize(("shape", "axis"), [((37, 11), 1), ((37, 11), 0), ((5, 6, 7), 1)])
def test_per_channel_blocks(
    monkeypatch: pytest.MonkeyPatch, block: int, shape: tuple[int, ...], axis: int
) -> None:
    monkeypatch.setattr(qc, "BLOCK_ELEMENTS", block)
    w = (rng.standard_normal(shape) * rng.uniform(0.01, 3, shape)).astype(np.float32)
    np.moveaxis(w, axis, -1)[..., 2] = 0.0  # an all-zero channel takes the smallest scale
    want_codes, want_scale = _whole_per_channel(w, axis)
    got = qc.quantize_weight_per_channel(w, axis=axis)
    assert got.codes.dtype == np.int8 and got.codes.flags.c_contiguous
    np.testing.assert_array_equal(got.codes, want_codes)
    np.testing.assert_array_equal(got.scale, want_scale)


@pytest.mark.parametrize("block", [1, 5, 1 << 20])
@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("shape", [(23, 9), (4, 3, 5), (7,), ()])
def test_quantize_tensor_blocks(
    monkeypatch: pytest.MonkeyPatch, block: int, bits: int, shape: tuple[int, ...]
) -> None:
    monkeypatch.setattr(qc, "BLOCK_ELEMENTS", block)
    x = rng.standard_normal(shape).astype(np.float32) * 4
    scale = 3.0 / qc.qmax(bits)  # some values saturate
    lo, hi = qc.qrange(bits)
    want = np.clip(np.rint(np.asarray(x, np.float64) / scale), lo, hi)
    got = qc.quantize_tensor(x, scale, bits)
    assert got.shape == x.shape and got.dtype == (np.int8 if bits == 8 else np.int16)
    np.testing.assert_array_equal(got, want)


def test_abs_max_reads_without_copies() -> None:
    x = np.array([[0.5, -3.25], [2.0, 1.0]], np.float32)
    assert qc.abs_max(x) == 3.25
    assert qc.abs_max(np.zeros((0, 3), np.float32)) == 0.0
    assert qc.abs_max(np.array([-128], np.int8)) == 128.0  # no int8 wrap-around
    assert np.isnan(qc.abs_max(np.array([1.0, np.nan], np.float32)))
    with pytest.raises(CimcError, match="weight contains NaN"):
        qc.quantize_weight_per_channel(np.array([[1.0, np.nan]], np.float32), axis=1)
