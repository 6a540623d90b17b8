"""ONNX opset 23's Attention, RotaryEmbedding and RMSNormalization in a LLaMA-style block,
and Gemm with a run-time B: translated (Attention and RotaryEmbedding as their schema's
function bodies), recognized as the canonical attention / rotary / rms_norm, equal to
onnxruntime, and compiled bit-exactly."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_build import check_against_ort, model, save

from cimc.api import import_model
from cimc.ir.graph import Graph
from cimc.reference.float_model import run_graph
from tests.e2e.e2e_helpers import compile_and_verify

S, D, HD = 8, 64, 16
rng = np.random.default_rng(0)


def _w(*shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) * 0.1).astype(np.float32)


def _block(tmp_path: Path, heads: int, kv_heads: int, causal: int, mask: bool) -> Path:
    """RMSNormalization -> q/k/v projections -> RotaryEmbedding -> Attention -> output."""
    angles = np.arange(S)[:, None] / 10000 ** (np.arange(0, HD, 2) / HD)[None]
    inits = {
        "wq": _w(D, heads * HD),
        "wk": _w(D, kv_heads * HD),
        "wv": _w(D, kv_heads * HD),
        "wo": _w(heads * HD, D),
        "g": 1 + _w(D),
        "cos": np.cos(angles)[None].astype(np.float32),  # [B, S, D/2]: no position ids
        "sin": np.sin(angles)[None].astype(np.float32),
        "sq": np.array([1, S, heads, HD], np.int64),
        "skv": np.array([1, S, kv_heads, HD], np.int64),
        "so": np.array([1, S, heads * HD], np.int64),
    }
    nodes = [helper.make_node("RMSNormalization", ["x", "g"], ["n"], axis=-1, epsilon=1e-6)]
    for name, shape in (("q", "sq"), ("k", "skv"), ("v", "skv")):
        nodes += [
            helper.make_node("MatMul", ["n", f"w{name}"], [f"{name}0"]),
            helper.make_node("Reshape", [f"{name}0", shape], [f"{name}1"]),
            helper.make_node("Transpose", [f"{name}1"], [f"{name}2"], perm=[0, 2, 1, 3]),
        ]
    operands = ["qr", "kr", "v2"] + (["attention_mask"] if mask else [])
    nodes += [
        helper.make_node("RotaryEmbedding", ["q2", "cos", "sin"], ["qr"]),
        helper.make_node("RotaryEmbedding", ["k2", "cos", "sin"], ["kr"]),
        helper.make_node("Attention", operands, ["y"], is_causal=causal),
        helper.make_node("Transpose", ["y"], ["y1"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["y1", "so"], ["y2"]),
        helper.make_node("MatMul", ["y2", "wo"], ["out"]),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, S, D])]
    if mask:
        shape = [1, 1, S, S]
        inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.BOOL, shape))
    graph = helper.make_graph(
        nodes,
        "block",
        inputs,
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    made = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    made.ir_version = 10
    path = tmp_path / "block.onnx"
    onnx.save(made, str(path))
    return path


def _feeds(mask: bool) -> dict[str, np.ndarray]:
    feeds = {"x": rng.standard_normal((1, S, D)).astype(np.float32)}
    if mask:
        keep = np.tril(np.ones((S, S), bool)) | (rng.random((S, S)) < 0.5)
        feeds["attention_mask"] = keep[None, None]
    return feeds


def _census(graph: Graph) -> Counter[str]:
    return Counter(n.op.NAME for n in graph.nodes() if n.op.NAME not in ("input", "constant"))


@pytest.mark.parametrize(
    ("heads", "kv_heads", "causal", "mask"),
    [(4, 4, 1, False), (4, 2, 1, False), (4, 2, 0, True), (4, 1, 1, True)],
    ids=["mha-causal", "gqa-causal", "gqa-mask", "mqa-causal-mask"],
)
def test_block_maps_onto_canonical_ops_and_is_bit_exact(
    heads: int, kv_heads: int, causal: int, mask: bool, tmp_path: Path
) -> None:
    path = _block(tmp_path, heads, kv_heads, causal, mask)
    feeds = _feeds(mask)
    graph = import_model(str(path))
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(run_graph(graph, feeds)["out"], want[0], rtol=1e-4, atol=1e-5)
    result, report = compile_and_verify(graph, "tiny", feeds)
    census = _census(result.float_graph)
    assert census["attention"] == 1 and census["rotary"] == 2 and census["rms_norm"] == 1
    assert not {"softmax", "matmul", "where", "concat", "mul"} & set(census)
    attention = next(n for n in result.float_graph.nodes() if n.op.NAME == "attention")
    assert attention.op.causal == bool(causal)
    assert result.float_graph.node(attention.inputs[1]).type.shape[1] == kv_heads  # GQA kept
    assert report.bit_exact, report.divergence
    assert report.cosine_vs_float > 0.99


@pytest.mark.parametrize(
    "attrs",
    [{}, {"transA": 1}, {"transB": 1}, {"alpha": 0.5, "beta": 2.0, "transA": 1, "transB": 1}],
)
def test_gemm_with_a_run_time_b(attrs: dict, tmp_path: Path) -> None:
    a_shape = [6, 5] if attrs.get("transA") else [5, 6]
    b_shape = [7, 6] if attrs.get("transB") else [6, 7]
    nodes = [helper.make_node("Gemm", ["a", "b", "c"], ["y"], **attrs)]
    m = model(
        nodes,
        {"a": (np.float32, a_shape), "b": (np.float32, b_shape)},
        ["y"],
        {"c": _w(1, 7)},
    )
    feeds = {"a": rng.standard_normal(a_shape).astype(np.float32)}
    feeds["b"] = rng.standard_normal(b_shape).astype(np.float32)
    graph = check_against_ort(save(m, tmp_path), feeds)
    assert _census(graph)["matmul"] == 1
    _, report = compile_and_verify(graph, "tiny", feeds)
    assert report.bit_exact, report.divergence


@pytest.mark.parametrize("causal", [0, 1])
def test_attention_with_past_and_present_kv(causal: int, tmp_path: Path) -> None:
    """past_key / past_value concatenated before the current keys (present_* outputs);
    causal masking aligned to the end of the keys, as attention(causal=True) is."""
    s, past, heads, kv_heads, hd = 4, 3, 4, 2, 8
    operands = ["q", "k", "v", "", "past_key", "past_value"]
    outputs = ["y", "present_key", "present_value"]
    nodes = [helper.make_node("Attention", operands, outputs, is_causal=causal)]
    shapes = {
        "q": [1, heads, s, hd],
        "k": [1, kv_heads, s, hd],
        "v": [1, kv_heads, s, hd],
        "past_key": [1, kv_heads, past, hd],
        "past_value": [1, kv_heads, past, hd],
    }
    graph_proto = helper.make_graph(
        nodes,
        "past",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, d) for n, d in shapes.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
    )
    made = helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", 23)])
    made.ir_version = 10
    path = tmp_path / "past.onnx"
    onnx.save(made, str(path))
    feeds = {n: rng.standard_normal(d).astype(np.float32) for n, d in shapes.items()}
    graph = import_model(str(path))
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = run_graph(graph, feeds)
    for name, value in zip(outputs, want, strict=True):
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-5)
    result, report = compile_and_verify(graph, "tiny", feeds)
    assert _census(result.float_graph) == Counter({"concat": 2, "attention": 1})
    attention = next(n for n in result.float_graph.nodes() if n.op.NAME == "attention")
    assert attention.op.causal == bool(causal)
    assert report.bit_exact, report.divergence
