"""Calibration inputs: .npz files (validated, no pickles) and generated inputs by meaning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cimc.errors import CimcError
from cimc.ir import DType, Graph, TensorType
from cimc.ir import ops as O
from cimc.quant.calibrate import calibrate, calibration_data, load_calibration_file
from cimc.quant.golden import value_scales
from cimc.quant.quantize import quantize_model

S, V, C = 6, 40, 8


def small_graph() -> Graph:
    g = Graph("cal")
    ids = g.add_input("input_ids", TensorType((1, S), DType.I64), "token_ids")
    mask = g.add_input("attention_mask", TensorType((1, S), DType.I64), "attention_mask")
    x = g.add_input("x", TensorType((1, S, C), DType.F32))
    table = np.random.default_rng(0).normal(0, 1, (V, C)).astype(np.float32)
    e = g.add_node(O.Embedding(), [ids, g.add_constant(table, "table")], "emb")
    m = g.add_node(O.Cast(DType.BOOL), [mask], "m")
    y = g.add_node(O.Add(), [e, x], "y")
    g.set_outputs([("y", y), ("m", m)])
    return g


def write(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "calib.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def good_arrays(n: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "input_ids": rng.integers(0, V, (n, 1, S)),
        "attention_mask": np.ones((n, 1, S), np.int64),
        "x": rng.normal(0, 2, (n, 1, S, C)),  # float64 is accepted and converted
    }


def test_file_samples_drive_the_ranges(tmp_path: Path) -> None:
    arrays = good_arrays()
    data = calibration_data(small_graph(), write(tmp_path, **arrays))
    assert not data.generated and len(data.samples) == 3 and "from" in data.note
    calib = calibrate(small_graph(), data)
    assert calib.ranges["x"] == pytest.approx(np.abs(arrays["x"].astype(np.float32)).max())
    assert calib.samples == 3 and not calib.generated


def test_batch_axis_may_be_left_out(tmp_path: Path) -> None:
    arrays = {k: v[:, 0] for k, v in good_arrays().items()}
    samples = load_calibration_file(small_graph(), write(tmp_path, **arrays))
    assert samples[0]["x"].shape == (1, S, C) and samples[0]["x"].dtype == np.float32


def test_generated_inputs_respect_meaning() -> None:
    data = calibration_data(small_graph(), None, count=5, seed=3)
    assert data.generated and "no calibration file" in data.note
    for s in data.samples:
        assert s["input_ids"].min() >= 0 and s["input_ids"].max() < V
        assert (s["attention_mask"] == 1).all()
    assert not np.array_equal(data.samples[0]["input_ids"], data.samples[1]["input_ids"])


def test_calibration_file_changes_the_scales(tmp_path: Path) -> None:
    arrays = good_arrays()
    arrays["x"] = arrays["x"] * 10
    from_file = quantize_model(small_graph(), str(write(tmp_path, **arrays)))
    generated = quantize_model(small_graph())
    assert value_scales(from_file.graph)["y"] > 3 * value_scales(generated.graph)["y"]
    assert generated.calibration.generated and "generated" in generated.note


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("x"), "missing arrays for inputs x"),
        (lambda a: a.update(extra=np.zeros(3)), "arrays extra match no graph input"),
        (lambda a: a.update(x=np.zeros((3, 1, S, C + 1))), r"expected \[N, 1, 6, 8\]"),
        (lambda a: a.update(input_ids=np.full((3, 1, S), V)), r"token ids must lie in \[0, 40\)"),
        (lambda a: a.update(attention_mask=np.full((3, 1, S), 2)), "mask values must be 0 or 1"),
        (lambda a: a.update(input_ids=np.zeros((3, 1, S), np.float32)), "expected integers"),
        (lambda a: a.update(x=np.full((3, 1, S, C), np.nan)), "NaN or infinity"),
        (lambda a: a.update(x=np.zeros((2, 1, S, C))), "disagree on the number of samples"),
    ],
)
def test_bad_calibration_files(tmp_path: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    arrays = good_arrays()
    change(arrays)
    path = write(tmp_path, **arrays)
    with pytest.raises(CimcError, match=message) as e:
        load_calibration_file(small_graph(), path)
    assert str(path) in str(e.value)


def test_pickled_arrays_are_refused(tmp_path: Path) -> None:
    arrays = good_arrays()
    arrays["x"] = np.array([{"evil": 1}] * 3, dtype=object)
    path = write(tmp_path, **arrays)
    with pytest.raises(CimcError, match=r"object arrays \(pickles\) are not accepted"):
        load_calibration_file(small_graph(), path)


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(CimcError, match="calibration file not found"):
        load_calibration_file(small_graph(), tmp_path / "none.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(CimcError, match="not a valid .npz file"):
        load_calibration_file(small_graph(), bad)


def test_unknown_method_and_zero_samples() -> None:
    data = calibration_data(small_graph(), None, count=2)
    with pytest.raises(CimcError, match="unknown calibration method 'mean'"):
        calibrate(small_graph(), data, method="mean")
    with pytest.raises(CimcError, match="at least one calibration sample"):
        calibration_data(small_graph(), None, count=0)


def test_percentile_clips_rare_outliers() -> None:
    data = calibration_data(small_graph(), None, count=4)
    data.samples[0]["x"][0, 0, 0] = 1000.0
    by_max = calibrate(small_graph(), data, method="max")
    by_pct = calibrate(small_graph(), data, method="percentile", percentile=99.0)
    assert by_max.ranges["x"] == 1000.0 and by_pct.ranges["x"] < 10.0
