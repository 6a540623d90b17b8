"""HF families through both ONNX exporters: accuracy against onnxruntime, canonical census."""

from __future__ import annotations

import pytest
from onnx_cases import ALLOWED, census, exported, import_and_check

from cimc.ir.ops import Attention

FAMILIES = ("bert", "distilbert", "gpt2", "llama", "qwen2")
DECODERS = ("gpt2", "llama", "qwen2")
# Dynamo exports in the default run come from tests/importers/data (see onnx_cases).
FAST_DYNAMO = ("bert", "llama")
_COMMON = {"input", "constant", "embedding", "linear", "attention", "add", "reshape", "transpose"}
# The exact op set per family: the idioms, the mask's cast, and nothing computing shapes.
EXPECTED = {
    "bert": _COMMON | {"layer_norm", "gelu", "cast"},
    "distilbert": _COMMON | {"layer_norm", "gelu", "cast"},
    "gpt2": _COMMON | {"layer_norm", "gelu", "cast", "slice"},  # slice: the fused qkv split
    "llama": _COMMON | {"rms_norm", "rotary", "silu", "mul", "cast"},  # mul: the SwiGLU gate
    "qwen2": _COMMON | {"rms_norm", "rotary", "silu", "mul", "cast"},
}


def _cases() -> list:
    cases = [pytest.param(f, "legacy", id=f"{f}-legacy") for f in FAMILIES]
    for family in FAMILIES:
        marks = () if family in FAST_DYNAMO else (pytest.mark.slow,)
        cases.append(pytest.param(family, "dynamo", id=f"{family}-dynamo", marks=marks))
    return cases


@pytest.mark.parametrize(("family", "exporter"), _cases())
def test_matches_onnxruntime_with_canonical_census(family: str, exporter: str) -> None:
    graph = import_and_check(exported(family, exporter))
    ops = census(graph)
    assert set(ops) == EXPECTED[family], f"ops {set(ops) ^ EXPECTED[family]} differ"
    assert ops["attention"] == 2 and ops["linear"] >= 8
    attention = [n for n in graph.nodes() if isinstance(n.op, Attention)]
    assert all(a.op.causal == (family in DECODERS) for a in attention)


@pytest.mark.parametrize(
    "family",
    [pytest.param(f, marks=() if f in FAST_DYNAMO else pytest.mark.slow) for f in FAMILIES],
)
def test_exporters_agree_on_op_multiset(family: str) -> None:
    legacy = census(import_and_check(exported(family, "legacy")))
    dynamo = census(import_and_check(exported(family, "dynamo")))
    legacy.pop("constant")  # exporters share (dedupe) equal initializers differently
    dynamo.pop("constant")
    assert legacy == dynamo


def test_llama_keeps_grouped_kv_heads_and_rotary() -> None:
    graph = import_and_check(exported("llama", "legacy"))
    ops = census(graph)
    assert ops["rms_norm"] == 5 and ops["rotary"] == 4 and ops["silu"] == 2
    for node in graph.nodes():
        if isinstance(node.op, Attention):
            q, k, v = (graph.node(i).type.shape for i in node.inputs[:3])
            assert (q[1], k[1], v[1]) == (4, 2, 2)  # GQA: repeat_kv undone
            assert node.op.scale == pytest.approx(16**-0.5)


def test_padding_mask_is_boolean_from_the_input() -> None:
    graph = import_and_check(exported("bert", "legacy"))
    node = next(n for n in graph.nodes() if isinstance(n.op, Attention))
    mask = graph.node(node.inputs[3])
    assert mask.type.dtype.value == "bool" and mask.type.shape == (1, 1, 1, 7)
    source = graph.node(mask.inputs[0])
    assert source.op.NAME == "cast" and source.inputs == ("attention_mask",)


def test_batch_and_longer_sequence_bind_from_shapes() -> None:
    graph = import_and_check(exported("gpt2", "legacy"), batch=2, seq=11)
    assert graph.node("input_ids").type.shape == (2, 11)


@pytest.mark.parametrize("family", ["bert", "llama", "gpt2"])
def test_odd_sizes(family: str) -> None:
    """hidden 96, 3 heads, intermediate 250 (LLaMA: 1 KV head), seq 7."""
    graph = import_and_check(exported(family, "legacy", preset="odd"))
    assert set(census(graph)) <= ALLOWED


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_live_dynamo_export(family: str) -> None:
    """The same checks on a fresh dynamo export (the checked-in files may be stale)."""
    from onnx_cases import _TMP

    from cimc.zoo import build_model, example_inputs, export_onnx

    model = build_model(family, "odd")
    path = export_onnx(model, example_inputs(model), _TMP / f"{family}_odd_live.onnx")
    legacy = census(import_and_check(exported(family, "legacy", preset="odd")))
    dynamo = census(import_and_check(path))
    legacy.pop("constant")
    dynamo.pop("constant")
    assert legacy == dynamo


@pytest.mark.parametrize(
    "family",
    [pytest.param(f, marks=() if f in FAST_DYNAMO else pytest.mark.slow) for f in FAMILIES],
)
def test_onnx_and_torch_export_agree(family: str) -> None:
    """The third exporter: torch.export through cimc's torch importer, same multiset."""
    from cimc.api import import_model
    from cimc.zoo import build_model, example_inputs

    model = build_model(family)
    via_torch = census(import_model(model, example_inputs(model, seq_len=7)))
    via_onnx = census(import_and_check(exported(family, "legacy")))
    via_torch.pop("constant")
    via_onnx.pop("constant")
    assert via_torch == via_onnx


@pytest.mark.parametrize("family", FAST_DYNAMO)
def test_imported_graph_round_trips_through_ir_text(family: str) -> None:
    from cimc.ir.parser import parse_graph
    from cimc.ir.printer import print_graph, referenced_constants

    graph = import_and_check(exported(family, "dynamo"))
    text = print_graph(graph)
    again = parse_graph(text, constants=referenced_constants(graph))
    assert print_graph(again) == text
    assert "loc(" in text  # ONNX node names survive as locations


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_lm_head_logits(family: str) -> None:
    """The logits variant; GPT-2 ties its LM head to the embedding table."""
    graph = import_and_check(exported(family, "legacy", head="lm"))
    ((_, out),) = graph.outputs
    node = graph.node(out)
    assert node.op.NAME == "linear" and node.type.shape == (1, 7, 512)


def test_left_padding_follows_pytorch_on_fully_masked_rows() -> None:
    """Padded query rows of a causal model see no key at all. PyTorch (and the legacy
    export) give them zeros, as the canonical attention does; the dynamo export adds
    finfo.min instead of -inf and onnxruntime averages uniformly there. cimc follows
    the model, so it is compared with PyTorch here."""
    import numpy as np
    import torch
    from onnx_cases import float_output

    from cimc.api import import_model
    from cimc.zoo import build_model

    ids = np.arange(3, 10, dtype=np.int64)[None]
    mask = np.array([[0, 0, 1, 1, 1, 1, 1]], dtype=np.int64)
    with torch.no_grad():
        want = build_model("llama")(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    for exporter in ("legacy", "dynamo"):
        graph = import_model(exported("llama", exporter), seq_len=7)
        got = float_output(graph, {"input_ids": ids, "attention_mask": mask})
        assert np.abs(got - want).max() < 1e-4 * np.abs(want).max()


@pytest.mark.parametrize(
    ("family", "opset", "attn"),
    [
        ("bert", 13, "eager"),  # the legacy exporter has no SDPA below opset 14
        ("llama", 13, "eager"),
        ("gpt2", 14, "sdpa"),
        ("bert", 20, "sdpa"),  # opset 20 has a Gelu op
        ("llama", 21, "sdpa"),
    ],
)
def test_opsets_and_eager_attention_give_the_same_graph(family: str, opset: int, attn: str) -> None:
    graph = import_and_check(exported(family, "legacy", opset=opset, attn=attn))
    reference = census(import_and_check(exported(family, "legacy")))
    ops = census(graph)
    ops.pop("constant")
    reference.pop("constant")
    assert ops == reference


def test_import_is_deterministic() -> None:
    from cimc.api import import_model
    from cimc.ir.printer import print_graph

    path = exported("llama", "dynamo")
    first, second = (print_graph(import_model(path, seq_len=7)) for _ in range(2))
    assert first == second
