"""Workloads derived from float and quantized graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cimc.backend.plan.from_graph import workload_from_graph
from cimc.backend.plan.streaming import plan_streaming
from cimc.backend.plan.target import load_target
from cimc.backend.plan.workload import DynamicMatmul, MatmulLayer, VectorWork
from cimc.ir import DType, Graph, TensorType
from cimc.ir.ops import Gelu, LayerNorm, Linear, Reshape
from cimc.ir.parser import parse_graph

ALL_OPS = Path(__file__).parent.parent / "ir" / "data" / "all_ops.ir"


def mlp_graph() -> Graph:
    """layer_norm -> fc1 (96->250) -> gelu -> fc2 (250->96) -> reshape, 7 tokens."""
    rng = np.random.default_rng(0)
    g = Graph("mlp")
    x = g.add_input("x", TensorType((1, 7, 96), DType.F32))
    ones, zeros = np.ones(96, np.float32), np.zeros(96, np.float32)
    ln = g.add_node(LayerNorm(eps=1e-5), [x, g.add_constant(ones), g.add_constant(zeros)])
    w1 = g.add_constant(rng.standard_normal((96, 250)).astype(np.float32), name="fc1.w")
    h = g.add_node(Linear(), [ln, w1], name="fc1")
    a = g.add_node(Gelu(), [h], name="act")
    w2 = g.add_constant(rng.standard_normal((250, 96)).astype(np.float32), name="fc2.w")
    y = g.add_node(Linear(), [a, w2], name="fc2")
    r = g.add_node(Reshape(shape=(7, 96)), [y], name="flat")
    g.set_outputs([("y", r)])
    g.verify()
    return g


def test_float_mlp_workload() -> None:
    work = workload_from_graph(mlp_graph())
    assert [type(i).__name__ for i in work.items] == [
        "VectorWork",
        "MatmulLayer",
        "VectorWork",
        "MatmulLayer",
    ]  # the reshape is free
    fc1, fc2 = work.layers
    assert (fc1.name, fc1.k, fc1.n, fc1.vectors) == ("fc1", 96, 250, 7)
    assert (fc2.k, fc2.n, fc2.depends_on) == (250, 96, ("act",))
    norm = work.items[0]
    assert isinstance(norm, VectorWork) and norm.ops_per_element == 8
    assert norm.elements == 7 * 96


def test_quantized_mlp_has_the_same_static_layers() -> None:
    from cimc.quant.quantize import quantize_model

    graph = mlp_graph()
    quantized = quantize_model(graph, samples=2).graph
    float_layers = [(m.name, m.k, m.n, m.vectors) for m in workload_from_graph(graph).layers]
    q_layers = [(m.name, m.k, m.n, m.vectors) for m in workload_from_graph(quantized).layers]
    assert q_layers == float_layers


def test_every_canonical_op_lowers() -> None:
    work = workload_from_graph(parse_graph(ALL_OPS.read_text(), random_seed=0))
    qkv = work.item("qkv")
    assert isinstance(qkv, MatmulLayer) and (qkv.k, qkv.n, qkv.vectors) == (16, 32, 12)
    qk, pv = work.item("att.qk"), work.item("att.pv")
    assert isinstance(qk, DynamicMatmul) and isinstance(pv, DynamicMatmul)
    assert (qk.k, qk.n, qk.vectors, qk.count) == (4, 6, 6, 8)  # 2 batches x 4 query heads
    assert (pv.k, pv.n) == (6, 4) and pv.depends_on == ("att.softmax",)
    mean = work.item("r_mean")
    assert isinstance(mean, VectorWork) and mean.elements == 2 * 4 * 6 * 6  # reads all scores
    assert "q1" not in {i.name for i in work.items}  # reshape: no work


@pytest.mark.slow
def test_hugging_face_bert_plans_on_tiny() -> None:
    from cimc.api import import_model
    from cimc.zoo import build_model, example_inputs

    model = build_model(
        "bert", hidden_size=96, num_attention_heads=3, intermediate_size=250, num_hidden_layers=2
    )
    graph = import_model(model, example_inputs(model, batch=1, seq_len=7))
    work = workload_from_graph(graph)
    assert [(m.k, m.n) for m in work.layers] == 2 * (4 * [(96, 96)] + [(96, 250), (250, 96)])
    plan = plan_streaming(work, load_target("tiny"))
    assert plan.bytes_first_inference == work.weight_bytes == 2 * (4 * 96 * 96 + 2 * 96 * 250)
