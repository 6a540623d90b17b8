"""Hugging Face families through torch.export: canonical structure and float accuracy."""

from __future__ import annotations

import functools
from collections import Counter

import numpy as np
import pytest
import torch

from cimc.importers.torch_export import import_torch
from cimc.ir import Graph
from cimc.ir.ops import Attention, Gelu, Linear, Rotary
from cimc.reference.float_model import FloatModel
from cimc.zoo import build_model, example_inputs

DECODERS = ("gpt2", "llama", "qwen2")


LAYER_FIELD = {"gpt2": "n_layer", "distilbert": "n_layers"}


def layers_override(family: str, layers: int) -> dict[str, int]:
    return {LAYER_FIELD.get(family, "num_hidden_layers"): layers}


def run_float(graph: Graph, ids: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    return FloatModel(graph).run(feeds)["output"]


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def census(graph: Graph) -> Counter[str]:
    return Counter(n.op.NAME for n in graph.nodes())


@functools.cache
def import_family(family: str) -> tuple[Graph, np.ndarray, torch.Tensor, torch.Tensor]:
    """A 2-layer LM of `family`, imported once per test session (exports take seconds)."""
    model = build_model(family, head="lm", **layers_override(family, 2))
    ids, mask = example_inputs(model, batch=2, seq_len=9, padded=True)
    mask[1, -3:] = 0  # two different paddings in the batch
    graph = import_torch(model, (ids, mask))
    with torch.no_grad():
        want = model(ids, mask).numpy()
    return graph, want, ids, mask


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "qwen2", "distilbert"])
def test_family_matches_pytorch(family: str) -> None:
    graph, want, ids, mask = import_family(family)
    assert relative_error(run_float(graph, ids, mask), want) < 1e-4
    ops = census(graph)
    assert ops["attention"] == 2
    # the exporters' spelled-out forms are gone
    for leftover in ("softmax", "matmul", "pow", "rsqrt", "reduce_mean", "where", "expand"):
        assert ops[leftover] == 0, leftover


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "qwen2"])
def test_attention_is_canonical(family: str) -> None:
    graph, _, _, _ = import_family(family)
    att = next(n for n in graph.nodes() if isinstance(n.op, Attention))
    assert att.op.causal == (family in DECODERS)
    # the padding mask is a boolean operand built from the attention_mask input only
    mask = graph.node(att.inputs[3])
    assert mask.type.dtype.value == "bool"
    assert mask.type.shape == (2, 1, 1, 9)
    chain = {graph.node(mask.inputs[0]).op.NAME, mask.op.NAME}
    assert chain == {"cast", "reshape"}
    q, k, v = (graph.node(i).type.shape for i in att.inputs[:3])
    assert q[1] == 4 and k[1] == v[1] == (2 if family in ("llama", "qwen2") else 4)


def test_llama_idioms() -> None:
    graph, _, _, _ = import_family("llama")
    ops = census(graph)
    assert ops["rms_norm"] == 5  # two per layer and the final norm
    assert ops["rotary"] == 4  # q and k per layer
    assert ops["silu"] == 2
    rotary = next(n for n in graph.nodes() if isinstance(n.op, Rotary))
    cos = graph.node(rotary.inputs[1])
    assert cos.type.shape == (9, 16)  # squeezed to [S, D]
    linear = [n for n in graph.nodes() if isinstance(n.op, Linear)]
    # weights are stored [K, N]: q_proj 64 -> 64, k_proj 64 -> 32 (GQA), up 64 -> 160, ...
    shapes = {graph.node(n.inputs[1]).type.shape for n in linear}
    assert shapes == {(64, 64), (64, 32), (64, 160), (160, 64), (64, 512)}


def test_gpt2_conv1d_and_tanh_gelu() -> None:
    graph, _, _, _ = import_family("gpt2")
    gelus = [n for n in graph.nodes() if isinstance(n.op, Gelu)]
    assert [g.op.approximate for g in gelus] == ["tanh", "tanh"]
    # addmm on a flattened [B*S, K] view became a linear on the [B, S, K] value
    for n in graph.nodes():
        if isinstance(n.op, Linear):
            assert n.type.rank == 3, n.name


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "qwen2"])
def test_family_odd_preset_deeper(family: str) -> None:
    model = build_model(family, preset="odd", head="lm", **layers_override(family, 3))
    ids, mask = example_inputs(model, batch=1, seq_len=33)
    graph = import_torch(model, (ids, mask))
    with torch.no_grad():
        want = model(ids, mask).numpy()
    assert relative_error(run_float(graph, ids, mask), want) < 1e-4
    assert census(graph)["attention"] == 3
