"""Calibration cache: one float graph compiled for several presets calibrates once.

The key is the content of the graph (constants by digest), the samples and the settings:
equal content hits, any change misses, and a hit returns the same ranges in fresh objects.
"""

from __future__ import annotations

import numpy as np
import pytest

from cimc.ir import DType, Graph, TensorType
from cimc.ir import ops as O
from cimc.quant import calibrate as cal
from cimc.quant.calibrate import calibrate, calibration_data, graph_fingerprint

S, C = 5, 8


def graph(weight_seed: int = 0) -> Graph:
    g = Graph("cache")
    x = g.add_input("x", TensorType((1, S, C), DType.F32))
    w = np.random.default_rng(weight_seed).normal(0, 1, (C, C)).astype(np.float32)
    y = g.add_node(O.MatMul(), [x, g.add_constant(w, "w")], "y")
    g.set_outputs([("y", y)])
    return g


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calibrations that actually ran the float model."""
    calls: list[int] = []
    real = cal._calibrate

    def counted(*args: object, **kwargs: object) -> cal.Calibration:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cal, "_calibrate", counted)
    monkeypatch.setattr(cal, "_CACHE", type(cal._CACHE)())
    return calls


def test_same_graph_and_samples_calibrate_once(runs: list[int]) -> None:
    first = calibrate(graph(), calibration_data(graph(), count=2))
    second = calibrate(graph(), calibration_data(graph(), count=2))  # equal content, new objects
    assert len(runs) == 1
    assert first.ranges == second.ranges and first.ranges is not second.ranges
    for name, values in first.channel_ranges.items():
        np.testing.assert_array_equal(values, second.channel_ranges[name])
        assert values is not second.channel_ranges[name]


def test_changed_weights_samples_or_settings_recalibrate(runs: list[int]) -> None:
    base = calibrate(graph(), calibration_data(graph(), count=2))
    other_weights = calibrate(graph(1), calibration_data(graph(1), count=2))
    calibrate(graph(), calibration_data(graph(), count=2, seed=5))
    calibrate(graph(), calibration_data(graph(), count=2), method="percentile")
    assert len(runs) == 4
    assert base.ranges["y"] != other_weights.ranges["y"]
    assert graph_fingerprint(graph()) != graph_fingerprint(graph(1))


def test_max_ranges_equal_float64_maxima(runs: list[int]) -> None:
    """Maxima are taken in the values' own float dtype: exactly the float64 result."""
    g = graph()
    data = calibration_data(g, count=3)
    calib = calibrate(g, data)
    want = max(float(np.abs(s["x"].astype(np.float64)).max()) for s in data.samples)
    assert calib.ranges["x"] == want
    channels = np.max(
        [np.abs(s["x"].astype(np.float64)).reshape(-1, C) for s in data.samples], (0, 1)
    )
    np.testing.assert_array_equal(calib.channel_ranges["x"], channels)
    assert calib.channel_ranges["x"].dtype == np.float64
