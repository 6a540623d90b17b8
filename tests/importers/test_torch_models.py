"""Hugging Face families through torch.export: canonical structure and float accuracy."""

from __future__ import annotations

import functools
from collections import Counter

import numpy as np
import pytest
import torch

from cimc.api import import_model
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
    graph = import_model(model, (ids, mask))
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
    graph = import_model(model, (ids, mask))
    with torch.no_grad():
        want = model(ids, mask).numpy()
    assert relative_error(run_float(graph, ids, mask), want) < 1e-4
    assert census(graph)["attention"] == 3


def eager_and_sdpa(family: str) -> list[Counter[str]]:
    """Census of the graphs of one model exported with eager and with sdpa attention."""
    censuses = []
    for implementation in ("eager", "sdpa"):
        model = build_model(family, head="lm", **layers_override(family, 1))
        model.model.config._attn_implementation = implementation
        ids, mask = example_inputs(model, batch=2, seq_len=6, padded=True)
        graph = import_model(model, (ids, mask))
        with torch.no_grad():
            want = model(ids, mask).numpy()
        assert relative_error(run_float(graph, ids, mask), want) < 1e-4
        censuses.append(census(graph))
    return censuses


def test_eager_attention_gives_the_sdpa_graph() -> None:
    eager, sdpa = eager_and_sdpa("llama")  # matmul/softmax/additive mask/repeat_kv spelled out
    assert eager == sdpa


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "gpt2", "qwen2", "distilbert"])
def test_eager_attention_gives_the_sdpa_graph_slow(family: str) -> None:
    eager, sdpa = eager_and_sdpa(family)
    assert eager == sdpa


OTHER_FAMILIES = {  # config class, model class, extra config fields
    "mistral": ("MistralConfig", "MistralForCausalLM", {"num_key_value_heads": 2}),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {"num_key_value_heads": 1, "head_dim": 16}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"num_key_value_heads": 2, "pad_token_id": 0}),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", {}),  # partial rotary
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"num_key_value_heads": 2, "head_dim": 16}),
}


class Logits(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(OTHER_FAMILIES))
def test_other_decoder_families(family: str) -> None:
    import transformers

    config_cls, model_cls, extra = OTHER_FAMILIES[family]
    fields = {
        "vocab_size": 128,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "max_position_embeddings": 64,
    }
    config = getattr(transformers, config_cls)(**fields, **extra)
    config.use_cache = False
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = Logits(getattr(transformers, model_cls)(config)).eval()
    ids = torch.randint(1, 128, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.int64)
    mask[1, -2:] = 0
    graph = import_model(model, (ids, mask))
    with torch.no_grad():
        want = model(ids, mask).numpy()
    assert relative_error(run_float(graph, ids, mask), want) < 1e-4
    ops = census(graph)
    assert ops["attention"] == 2 and ops["rotary"] == 4 and ops["softmax"] == 0


def test_single_token_keeps_rotary() -> None:
    """At position 0 cos is all ones and sin all zeros: still a rotary, not a bare x."""
    model = build_model("llama", head="lm", num_hidden_layers=1)
    ids, mask = example_inputs(model, seq_len=1)
    graph = import_model(model, (ids, mask))
    with torch.no_grad():
        want = model(ids, mask).numpy()
    assert relative_error(run_float(graph, ids, mask), want) < 1e-4
    ops = census(graph)
    assert (
        ops["rotary"] == 2 and ops["transpose"] == 0
    )  # [1, S=1, H, D] -> [1, H, 1, D] is a reshape
