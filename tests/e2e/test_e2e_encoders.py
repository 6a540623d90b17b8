"""ViT (patch convolution, class token) and Whisper's audio encoder (two 1-D convolutions,
GELU, sinusoidal positions) from random-weight HF configs, through torch.export: the float
graph equals the model, and the program is bit-exact on `tiny` and `default`. The ONNX
exporters are in the family matrix (tests/e2e/test_family_matrix.py, slow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cimc.api import import_model
from cimc.reference.float_model import run_graph
from cimc.zoo import build_encoder, encoder_input
from tests.e2e.e2e_helpers import ARCHS, compile_and_verify


@pytest.mark.parametrize("arch_name", ARCHS)
@pytest.mark.parametrize("kind", ["vit", "whisper"])
def test_encoder_bit_exact(kind: str, arch_name: str) -> None:
    model = build_encoder(kind, num_layers=1)
    x = encoder_input(model)
    graph = import_model(model, example_inputs=(x,))
    ops = {n.op.NAME for n in graph.nodes()}
    assert {"im2col", "linear", "attention", "layer_norm", "gelu"} <= ops  # convs as matmuls
    with torch.no_grad():
        want = model(x).numpy()
    got = next(iter(run_graph(graph, {"x": x.numpy()}).values()))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    _, report = compile_and_verify(graph, arch_name, {"x": x.numpy()})
    assert report.bit_exact, report.divergence
    assert report.cosine_vs_float > 0.99
