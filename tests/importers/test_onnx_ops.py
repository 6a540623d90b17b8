"""Importer unit tests on hand-built ONNX graphs: each idiom and lowering, run vs onnxruntime."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from onnx import helper
from onnx_build import check_against_ort, const, model, save

rng = np.random.default_rng(0)
X = ("x", (np.float32, [2, 5, 8]))


def ops_of(graph) -> Counter[str]:  # type: ignore[no-untyped-def]
    return Counter(n.op.NAME for n in graph.nodes() if n.op.NAME not in ("input", "constant"))


def x_feed() -> dict[str, np.ndarray]:
    return {"x": rng.standard_normal((2, 5, 8)).astype(np.float32)}


def test_gemm_with_trans_b_alpha_beta_becomes_one_linear(tmp_path: Path) -> None:
    w = rng.standard_normal((6, 8)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1, alpha=0.5, beta=2.0)]
    m = model(nodes, {"x": (np.float32, [4, 8])}, ["y"], {"w": w, "b": b})
    graph = check_against_ort(
        save(m, tmp_path), {"x": rng.standard_normal((4, 8)).astype(np.float32)}
    )
    assert ops_of(graph) == {"linear": 1}


def test_matmul_add_folds_bias(tmp_path: Path) -> None:
    w = rng.standard_normal((8, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["b", "h"], ["y"]),
    ]
    graph = check_against_ort(
        save(model(nodes, dict([X]), ["y"], {"w": w, "b": b}), tmp_path), x_feed()
    )
    assert ops_of(graph) == {"linear": 1}
    assert len(graph.node("y").inputs) == 3


def _layer_norm_nodes(square: str) -> list:
    nodes = [
        helper.make_node("ReduceMean", ["x", "axes"], ["mu"]),
        helper.make_node("Sub", ["x", "mu"], ["d"]),
    ]
    if square == "pow":
        nodes += [const("two", 2.0), helper.make_node("Pow", ["d", "two"], ["d2"])]
    else:
        nodes += [helper.make_node("Mul", ["d", "d"], ["d2"])]
    return nodes + [
        helper.make_node("ReduceMean", ["d2", "axes"], ["var"]),
        const("eps", 1e-5),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["sd"]),
        helper.make_node("Div", ["d", "sd"], ["n"]),
        helper.make_node("Mul", ["n", "g"], ["s"]),
        helper.make_node("Add", ["s", "b"], ["y"]),
    ]


@pytest.mark.parametrize("square", ["pow", "mul"])
def test_decomposed_layer_norm(tmp_path: Path, square: str) -> None:
    weights = {
        "axes": np.array([-1], dtype=np.int64),
        "g": rng.standard_normal(8).astype(np.float32),
        "b": rng.standard_normal(8).astype(np.float32),
    }
    m = model(_layer_norm_nodes(square), dict([X]), ["y"], weights)
    graph = check_against_ort(save(m, tmp_path), x_feed())
    assert ops_of(graph) == {"layer_norm": 1}
    assert graph.node("y").op.eps == pytest.approx(1e-5)


@pytest.mark.parametrize("inverse", ["reciprocal", "div_one", "div_x"])
def test_rms_norm_spellings(tmp_path: Path, inverse: str) -> None:
    nodes = [
        const("two", 2.0),
        helper.make_node("Pow", ["x", "two"], ["x2"]),
        helper.make_node("ReduceMean", ["x2", "axes"], ["ms"]),
        const("eps", 1e-6),
        helper.make_node("Add", ["ms", "eps"], ["me"]),
        helper.make_node("Sqrt", ["me"], ["rt"]),
    ]
    if inverse == "reciprocal":
        nodes += [
            helper.make_node("Reciprocal", ["rt"], ["r"]),
            helper.make_node("Mul", ["x", "r"], ["n"]),
        ]
    elif inverse == "div_one":
        nodes += [const("one", 1.0), helper.make_node("Div", ["one", "rt"], ["r"])]
        nodes += [helper.make_node("Mul", ["x", "r"], ["n"])]
    else:
        nodes += [helper.make_node("Div", ["x", "rt"], ["n"])]
    nodes += [helper.make_node("Mul", ["g", "n"], ["y"])]
    weights = {
        "axes": np.array([2], dtype=np.int64),
        "g": rng.standard_normal(8).astype(np.float32),
    }
    graph = check_against_ort(save(model(nodes, dict([X]), ["y"], weights), tmp_path), x_feed())
    assert ops_of(graph) == {"rms_norm": 1}


def test_tanh_gelu_and_silu(tmp_path: Path) -> None:
    nodes = [
        const("three", 3.0),
        helper.make_node("Pow", ["x", "three"], ["x3"]),
        const("k", 0.044715),
        helper.make_node("Mul", ["k", "x3"], ["kx3"]),
        helper.make_node("Add", ["x", "kx3"], ["inner"]),
        const("c", math.sqrt(2 / math.pi)),
        helper.make_node("Mul", ["inner", "c"], ["arg"]),
        helper.make_node("Tanh", ["arg"], ["t"]),
        const("one", 1.0),
        helper.make_node("Add", ["one", "t"], ["t1"]),
        const("half", 0.5),
        helper.make_node("Mul", ["half", "x"], ["hx"]),
        helper.make_node("Mul", ["hx", "t1"], ["gelu"]),
        helper.make_node("Sigmoid", ["gelu"], ["sg"]),
        helper.make_node("Mul", ["sg", "gelu"], ["y"]),
    ]
    graph = check_against_ort(save(model(nodes, dict([X]), ["y"]), tmp_path), x_feed())
    assert ops_of(graph) == {"gelu": 1, "silu": 1}
    assert graph.node("gelu").op.approximate == "tanh"


def test_opset13_attributes_and_split(tmp_path: Path) -> None:
    """Opset 13 spells ReduceMean axes and Split sizes as attributes/inputs differently."""
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[2], keepdims=1),
        helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=2),
        helper.make_node("Unsqueeze", ["a", "ax"], ["ua"]),
        helper.make_node("Squeeze", ["ua", "ax"], ["sa"]),
        helper.make_node("Mul", ["sa", "m"], ["am"]),
        helper.make_node("Concat", ["am", "b"], ["y"], axis=-1),
    ]
    weights = {"sizes": np.array([3, 5], dtype=np.int64), "ax": np.array([0], dtype=np.int64)}
    m = model(nodes, dict([X]), ["y"], weights, opset=13)
    graph = check_against_ort(save(m, tmp_path), x_feed())
    assert ops_of(graph)["slice"] == 2 and ops_of(graph)["reshape"] == 0


def test_gather_nd_with_constant_indices_becomes_a_view(tmp_path: Path) -> None:
    """The dynamo exporter's mask[batch_idx, kv_idx] on a [B, S] mask."""
    b_idx = np.broadcast_to(np.arange(2).reshape(2, 1, 1, 1, 1), (2, 1, 3, 4, 1))
    s_idx = np.broadcast_to(np.arange(4).reshape(1, 1, 1, 4, 1), (2, 1, 3, 4, 1))
    idx = np.concatenate([b_idx, s_idx], axis=-1).astype(np.int64)
    nodes = [helper.make_node("GatherND", ["x", "idx"], ["y"])]
    m = model(nodes, {"x": (np.float32, [2, 4])}, ["y"], {"idx": idx})
    graph = check_against_ort(
        save(m, tmp_path), {"x": rng.standard_normal((2, 4)).astype(np.float32)}
    )
    assert set(ops_of(graph)) <= {"reshape", "expand"}


def test_non_affine_gather_is_a_clear_error(tmp_path: Path) -> None:
    from cimc.errors import CimcError
    from cimc.importers import import_onnx

    nodes = [helper.make_node("Gather", ["x", "idx"], ["y"], axis=1)]
    weights = {"idx": np.array([0, 2, 3], dtype=np.int64)}
    m = model(nodes, dict([X]), ["y"], weights)
    with pytest.raises(CimcError, match="not a strided view"):
        import_onnx(save(m, tmp_path))


def test_strided_gather_becomes_slice(tmp_path: Path) -> None:
    nodes = [helper.make_node("Gather", ["x", "idx"], ["y"], axis=2)]
    weights = {"idx": np.array([1, 3, 5], dtype=np.int64)}
    graph = check_against_ort(save(model(nodes, dict([X]), ["y"], weights), tmp_path), x_feed())
    assert ops_of(graph) == {"slice": 1}


def _sdpa_nodes(mask_kind: str) -> list:
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["qk"]),
        const("scale", 0.125),
        helper.make_node("Mul", ["qk", "scale"], ["scores"]),
    ]
    if mask_kind == "min_float":  # HF's (1 - m) * finfo.min, m a float [B, 1, 1, S] mask
        nodes += [
            helper.make_node("Cast", ["m"], ["mf"], to=1),
            helper.make_node("Reshape", ["mf", "mshape"], ["m4"]),
            const("one", 1.0),
            helper.make_node("Sub", ["one", "m4"], ["inv"]),
            const("big", float(np.finfo(np.float32).min)),
            helper.make_node("Mul", ["inv", "big"], ["add_mask"]),
        ]
    else:  # where(bool, 0, -inf) as the exporters' SDPA decomposition
        nodes += [
            helper.make_node("Cast", ["m"], ["mb"], to=9),
            helper.make_node("Reshape", ["mb", "mshape"], ["m4"]),
            const("zero", 0.0),
            const("ninf", float("-inf")),
            helper.make_node("Where", ["m4", "zero", "ninf"], ["add_mask"]),
        ]
    return nodes + [
        helper.make_node("Add", ["scores", "add_mask"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
        helper.make_node("IsNaN", ["p"], ["nan"]),
        const("zero_p", 0.0),
        helper.make_node("Where", ["nan", "zero_p", "p"], ["pg"]),
        helper.make_node("MatMul", ["pg", "v"], ["y"]),
    ]


@pytest.mark.parametrize("mask_kind", ["min_float", "where_inf"])
def test_attention_with_guard_and_additive_mask(tmp_path: Path, mask_kind: str) -> None:
    qkv = {n: (np.float32, [2, 3, 5, 4]) for n in "qkv"}
    inputs = {**qkv, "m": (np.int64, [2, 5])}
    m = model(_sdpa_nodes(mask_kind), inputs, ["y"], {"mshape": np.array([2, 1, 1, 5], np.int64)})
    feeds = {n: rng.standard_normal((2, 3, 5, 4)).astype(np.float32) for n in "qkv"}
    feeds["m"] = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=np.int64)
    graph = check_against_ort(save(m, tmp_path), feeds)
    node = graph.node("y")
    assert node.op.NAME == "attention" and node.op.scale == pytest.approx(0.125)
    mask = graph.node(node.inputs[3])
    assert mask.type.dtype.value == "bool" and mask.type.shape == (2, 1, 1, 5)
    assert "softmax" not in ops_of(graph) and "where" not in ops_of(graph)


def test_rotary_pattern(tmp_path: Path) -> None:
    cos = rng.standard_normal((5, 8)).astype(np.float32)
    sin = rng.standard_normal((5, 8)).astype(np.float32)
    nodes = [
        helper.make_node("Mul", ["x", "cos"], ["xc"]),
        helper.make_node("Slice", ["x", "s0", "s1", "ax"], ["lo"]),
        helper.make_node("Slice", ["x", "s1", "s2", "ax"], ["hi"]),
        helper.make_node("Neg", ["hi"], ["nhi"]),
        helper.make_node("Concat", ["nhi", "lo"], ["rot"], axis=-1),
        helper.make_node("Mul", ["sin", "rot"], ["rs"]),
        helper.make_node("Add", ["rs", "xc"], ["y"]),
    ]
    weights = {
        "cos": cos, "sin": sin, "ax": np.array([-1], np.int64),
        "s0": np.array([0], np.int64), "s1": np.array([4], np.int64),
        "s2": np.array([np.iinfo(np.int64).max], np.int64),
    }  # fmt: skip
    inputs = {"x": (np.float32, [1, 2, 5, 8])}
    feeds = {"x": rng.standard_normal((1, 2, 5, 8)).astype(np.float32)}
    graph = check_against_ort(save(model(nodes, inputs, ["y"], weights), tmp_path), feeds)
    assert ops_of(graph) == {"rotary": 1}


def test_shape_arithmetic_folds_away(tmp_path: Path) -> None:
    """Reshape to [Shape(x)[0], -1] built at run time folds to one static reshape."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shp"]),
        helper.make_node("Gather", ["shp", "zero"], ["b"], axis=0),
        helper.make_node("Unsqueeze", ["b", "zero1"], ["b1"]),
        helper.make_node("Concat", ["b1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    weights = {
        "zero": np.array(0, np.int64),
        "zero1": np.array([0], np.int64),
        "minus1": np.array([-1], np.int64),
    }
    inputs = {"x": (np.float32, ["batch", "seq", 8])}
    graph = check_against_ort(
        save(model(nodes, inputs, ["y"], weights), tmp_path),
        {"x": rng.standard_normal((1, 6, 8)).astype(np.float32)},
        seq_len=6,
    )
    assert ops_of(graph) == {"reshape": 1}
    assert graph.node("y").type.shape == (1, 48)


def test_reshape_transpose_reshape_chain_becomes_one_transpose(tmp_path: Path) -> None:
    """The dynamo spelling of k.transpose(-1, -2) on [B, H, S, D]."""
    nodes = [
        helper.make_node("Reshape", ["x", "flat"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Reshape", ["t", "back"], ["y"]),
    ]
    weights = {"flat": np.array([4, 7, 16], np.int64), "back": np.array([1, 4, 16, 7], np.int64)}
    inputs = {"x": (np.float32, [1, 4, 7, 16])}
    feeds = {"x": rng.standard_normal((1, 4, 7, 16)).astype(np.float32)}
    graph = check_against_ort(save(model(nodes, inputs, ["y"], weights), tmp_path), feeds)
    assert ops_of(graph) == {"transpose": 1}
    assert graph.node("y").op.perm == (0, 1, 3, 2)
