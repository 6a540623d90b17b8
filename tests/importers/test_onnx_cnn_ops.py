"""The CNN ops of the ONNX importer on hand-built models, run vs onnxruntime: Conv with
explicit and automatic pads, groups and dilations, Conv + BatchNormalization folded into
one conv, MaxPool / AveragePool / global pools, Clip."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from onnx import helper
from onnx_build import check_against_ort, const, model, save

from cimc.errors import CimcError

rng = np.random.default_rng(0)


def _x(shape: list[int]) -> dict[str, np.ndarray]:
    return {"x": rng.standard_normal(shape).astype(np.float32)}


def _ops(graph) -> Counter[str]:  # type: ignore[no-untyped-def]
    return Counter(n.op.NAME for n in graph.nodes() if n.op.NAME not in ("input", "constant"))


@pytest.mark.parametrize(
    "attrs",
    [
        {"pads": [1, 0, 2, 1], "strides": [2, 1], "dilations": [1, 2]},
        {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
        {"auto_pad": "SAME_LOWER"},
        {"auto_pad": "VALID", "group": 2},
    ],
)
def test_conv(attrs: dict, tmp_path: Path) -> None:
    groups = attrs.get("group", 1)
    w = rng.standard_normal((6, 4 // groups, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)]
    m = model(nodes, {"x": (np.float32, [1, 4, 9, 8])}, ["y"], {"w": w, "b": b})
    graph = check_against_ort(save(m, tmp_path), _x([1, 4, 9, 8]))
    assert _ops(graph)["linear"] >= 1


def test_conv_batch_norm_relu_is_one_conv(tmp_path: Path) -> None:
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    stats = {
        "g": rng.uniform(0.5, 1.5, 5),
        "be": rng.uniform(-0.5, 0.5, 5),
        "mu": rng.uniform(-0.5, 0.5, 5),
        "var": rng.uniform(0.5, 2.0, 5),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "var"], ["n"], epsilon=1e-3),
        helper.make_node("Relu", ["n"], ["y"]),
    ]
    inits = {"w": w, **{k: v.astype(np.float32) for k, v in stats.items()}}
    m = model(nodes, {"x": (np.float32, [1, 3, 6, 6])}, ["y"], inits)
    graph = check_against_ort(save(m, tmp_path), _x([1, 3, 6, 6]))
    assert _ops(graph)["mul"] == 0 and _ops(graph)["add"] == 0  # folded into the linear
    assert _ops(graph)["linear"] == 1 and _ops(graph)["relu"] == 1


@pytest.mark.parametrize(
    "node",
    [
        helper.make_node(
            "MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]
        ),
        helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 1]),
        helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node(
            "AveragePool", ["x"], ["y"], kernel_shape=[3, 2], pads=[1, 0, 1, 1], count_include_pad=1
        ),  # fmt: skip
        helper.make_node(
            "AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1
        ),  # fmt: skip
        helper.make_node("GlobalAveragePool", ["x"], ["y"]),
        helper.make_node("GlobalMaxPool", ["x"], ["y"]),
    ],
    ids=lambda n: n.op_type + str(len(n.attribute)),
)
def test_pools(node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    m = model([node], {"x": (np.float32, [2, 3, 8, 8])}, ["y"])
    check_against_ort(save(m, tmp_path), _x([2, 3, 8, 8]))


def test_partial_ceil_window_is_refused(tmp_path: Path) -> None:
    node = helper.make_node(
        "MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1
    )
    m = model([node], {"x": (np.float32, [1, 1, 7, 7])}, ["y"])
    with pytest.raises(CimcError, match="ceil_mode=1 with a partial last window"):
        check_against_ort(save(m, tmp_path), _x([1, 1, 7, 7]))


def test_clip_is_relu6(tmp_path: Path) -> None:
    nodes = [const("lo", 0.0), const("hi", 6.0), helper.make_node("Clip", ["x", "lo", "hi"], ["y"])]
    m = model(nodes, {"x": (np.float32, [2, 16])}, ["y"])
    feeds = {"x": (rng.standard_normal((2, 16)) * 5).astype(np.float32)}
    assert _ops(check_against_ort(save(m, tmp_path), feeds)) == {"clip": 1}
