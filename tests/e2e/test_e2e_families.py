"""RoBERTa-family position ids (cumsum over the padding) and T5's additive attention bias,
through torch.export, bit-exact on `tiny` and `default`. The exporters x families x presets
matrix is tests/e2e/test_family_matrix.py (slow)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from cimc.api import import_model
from cimc.ir.graph import Graph
from cimc.ir.ops import Attention
from cimc.quant.golden import run_golden
from cimc.reference.float_model import run_graph
from cimc.zoo import build_model, example_inputs
from tests.e2e.e2e_helpers import ARCHS, compile_and_verify


def _model_and_graph(family: str, seq_len: int = 8) -> tuple[torch.nn.Module, Graph, dict]:
    model = build_model(family, num_hidden_layers=1)
    ids, mask = example_inputs(model, batch=2, seq_len=seq_len, padded=True)
    ids[1, 2] = model.model.config.pad_token_id  # a pad inside the sequence too
    mask[1, 2] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = import_model(model, example_inputs=(ids, mask))
    return model, graph, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}


def _float_matches_model(model: torch.nn.Module, graph: Graph, feeds: dict) -> None:
    with torch.no_grad():
        want = model(*(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask")))
    got = next(iter(run_graph(graph, feeds).values()))
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch_name", ARCHS)
def test_roberta_position_ids_bit_exact(arch_name: str) -> None:
    model, graph, feeds = _model_and_graph("roberta")
    ops = {n.op.NAME for n in graph.nodes()}
    assert {"cumsum", "equal", "logical_not", "mul"} <= ops  # computed at run time, not folded
    _float_matches_model(model, graph, feeds)
    _, report = compile_and_verify(graph, arch_name, feeds)
    assert report.bit_exact, report.divergence
    assert report.cosine_vs_float > 0.99


def test_roberta_positions_follow_the_padding() -> None:
    """The position ids come from the run-time ids: a token turned into the pad (mask kept)
    shifts the positions after it, so that sequence's outputs change and the other's do
    not; the program is bit-exact on both inputs."""
    model, graph, feeds = _model_and_graph("roberta")
    result, report = compile_and_verify(graph, "tiny", feeds)
    assert report.bit_exact
    shifted = dict(feeds)
    ids = feeds["input_ids"].copy()
    ids[1, 4] = model.model.config.pad_token_id
    shifted["input_ids"] = ids
    _, again = compile_and_verify(graph, "tiny", shifted)
    assert again.bit_exact
    before, after = (
        next(iter(run_golden(result.graph, f).outputs.values())) for f in (feeds, shifted)
    )
    np.testing.assert_array_equal(before[0], after[0])
    assert (before[1] != after[1]).any()


@pytest.mark.parametrize("arch_name", ARCHS)
def test_t5_encoder_relative_bias_bit_exact(arch_name: str) -> None:
    model, graph, feeds = _model_and_graph("t5")
    attention = [n for n in graph.nodes() if isinstance(n.op, Attention)]
    assert attention and all(n.op.bias for n in attention)
    assert all(n.op.mask_index(len(n.inputs)) is not None for n in attention)  # padding kept
    _float_matches_model(model, graph, feeds)
    result, report = compile_and_verify(graph, arch_name, feeds)
    assert report.bit_exact, report.divergence
    assert report.cosine_vs_float > 0.99
    qattn = [n for n in result.graph.nodes() if n.op.NAME == "q.attention"]
    assert qattn and all(n.op.bias for n in qattn)
    assert all(result.graph.node(n.inputs[-1]).type.dtype.value == "i16" for n in qattn)
