"""ONNX Tile: lowered to reshape + expand + reshape, equal to onnxruntime for any repeats."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import helper
from onnx_build import check_against_ort, model, save

from cimc.errors import CimcError
from cimc.importers import import_onnx
from cimc.reference.float_model import run_graph

rng = np.random.default_rng(5)


def _ops(graph) -> Counter[str]:  # type: ignore[no-untyped-def]
    return Counter(n.op.NAME for n in graph.nodes() if n.op.NAME not in ("input", "constant"))


def _tile_model(shape: list[int], repeats: list[int]) -> object:
    nodes = [helper.make_node("Tile", ["x", "reps"], ["t"]), helper.make_node("Relu", ["t"], ["y"])]
    reps = np.array(repeats, dtype=np.int64)
    return model(nodes, {"x": (np.float32, shape)}, ["y"], {"reps": reps})


@pytest.mark.parametrize(
    ("shape", "repeats", "expands"),
    [
        ([2, 5, 8], [1, 3, 1], 1),  # whole-axis repeat of a long axis
        ([2, 5, 8], [2, 1, 3], 1),  # several axes at once: still one expand
        ([2, 1, 8], [1, 4, 1], 1),  # size-1 axis: a plain broadcast
        ([3, 1, 2, 4], [2, 3, 1, 2], 1),  # mixed
        ([2, 5, 8], [1, 1, 1], 0),  # no-op
        ([7], [5], 1),
    ],
)
def test_tile_matches_onnxruntime(
    tmp_path: Path, shape: list[int], repeats: list[int], expands: int
) -> None:
    path = save(_tile_model(shape, repeats), tmp_path)  # type: ignore[arg-type]
    graph = check_against_ort(path, {"x": rng.standard_normal(shape).astype(np.float32)})
    assert _ops(graph)["expand"] == expands
    assert set(_ops(graph)) <= {"reshape", "expand", "relu"}
    out = graph.node(graph.outputs[0][1]).type.shape
    assert list(out) == [d * r for d, r in zip(shape, repeats, strict=True)]


def test_repeat_interleave_gqa_legacy_export(tmp_path: Path) -> None:
    """dynamo=False exports repeat_interleave as Unsqueeze + Tile + Reshape (it used to fail)."""

    class RepeatKV(torch.nn.Module):
        def forward(self, k: torch.Tensor) -> torch.Tensor:
            return k.repeat_interleave(3, dim=1) * 2.0

    k = torch.randn(1, 2, 5, 4)
    path = tmp_path / "rkv.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(RepeatKV(), (k,), str(path), input_names=["k"], dynamo=False)
    graph = check_against_ort(path, {"k": k.numpy()})
    assert _ops(graph)["expand"] == 1
    got = run_graph(graph, {"k": k.numpy()})
    want = (k.repeat_interleave(3, dim=1) * 2.0).numpy()
    np.testing.assert_allclose(next(iter(got.values())), want, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("repeats", "message"),
    [([1, 2], "needs one entry per axis"), ([1, 0, 1], "must be >= 1"), ([1, -2, 1], ">= 1")],
)
def test_bad_repeats_are_located_errors(tmp_path: Path, repeats: list[int], message: str) -> None:
    path = save(_tile_model([2, 5, 8], repeats), tmp_path)  # type: ignore[arg-type]
    with pytest.raises(CimcError, match=message) as info:
        import_onnx(path)
    assert "\n" not in str(info.value) and info.value.location


def test_run_time_repeats_are_refused(tmp_path: Path) -> None:
    nodes = [helper.make_node("Tile", ["x", "reps"], ["y"])]
    m = model(nodes, {"x": (np.float32, [2, 3]), "reps": (np.int64, [2])}, ["y"])
    with pytest.raises(CimcError, match="must be a constant"):
        import_onnx(save(m, tmp_path))


def test_huge_tile_is_refused_before_building(tmp_path: Path) -> None:
    path = save(_tile_model([2, 5, 8], [1, 1 << 40, 1]), tmp_path)  # type: ignore[arg-type]
    with pytest.raises(CimcError, match="more than cimc's limit"):
        import_onnx(path)
