"""Helpers shared by the quantizer tests: quantize / dequantize float test data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cimc.quant import constants as qc


class Q:
    """Quantize float test data to int64 codes at a calibrated symmetric scale."""

    @staticmethod
    def scale_for(x: np.ndarray, bits: int) -> float:
        return qc.activation_scale(float(np.abs(x).max()), bits)

    @staticmethod
    def codes(x: np.ndarray, scale: float, bits: int) -> torch.Tensor:
        lo, hi = qc.qrange(bits)
        return torch.from_numpy(np.clip(np.rint(x / scale), lo, hi).astype(np.int64))

    @staticmethod
    def steps(y: torch.Tensor, scale: float, ref: np.ndarray, bits: int) -> np.ndarray:
        """|y - ref| in output steps, ref saturated to the code range like the recipe."""
        lo, hi = qc.qrange(bits)
        return np.abs(y.numpy() - np.clip(ref / scale, lo, hi))


@pytest.fixture
def quant() -> type[Q]:
    return Q


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20260522)
