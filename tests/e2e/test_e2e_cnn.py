"""CNNs end to end: ResNet- and MobileNetV2-shaped models (plain PyTorch, seeded weights,
non-trivial BatchNorm statistics) import, fold their batch norms, compile and run
bit-exactly against the integer golden on both presets."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cimc.api import import_model
from cimc.ir.graph import Graph
from cimc.ir.ops import Conv, Im2col, Linear, Mul, Pool
from cimc.reference.float_model import run_graph
from cimc.zoo.cnn import build_cnn, cnn_input
from tests.e2e.e2e_helpers import ARCHS, compile_and_verify

FAMILIES = ("resnet", "mobilenetv2")


def _import(family: str, exporter: str, tmp_path: Path) -> tuple[Graph, np.ndarray]:
    model = build_cnn(family, "tiny")
    x = cnn_input(model)
    if exporter == "torch.export":
        return import_model(model, example_inputs=(x,)), x.numpy()
    path = tmp_path / f"{family}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notices
        torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"], opset_version=17)
    return import_model(str(path)), x.numpy()


@pytest.mark.parametrize("arch_name", ARCHS)
@pytest.mark.parametrize("family", FAMILIES)
def test_cnn_bit_exact(family: str, arch_name: str, tmp_path: Path) -> None:
    graph, x = _import(family, "torch.export", tmp_path)
    ops = {type(n.op) for n in graph.nodes()}
    assert not ops & {Conv, Pool, Mul}  # convs became linears, batch norms folded into them
    assert {Linear, Im2col} <= ops
    with torch.no_grad():
        want = build_cnn(family, "tiny")(torch.from_numpy(x)).numpy()
    got = next(iter(run_graph(graph, {"x": x}).values()))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    result, report = compile_and_verify(graph, arch_name, {"x": x})
    assert report.bit_exact, report.divergence
    assert report.cosine_vs_float > 0.99


@pytest.mark.parametrize("family", FAMILIES)
def test_cnn_onnx_same_program_as_torch_export(family: str, tmp_path: Path) -> None:
    """The legacy ONNX exporter folds batch norms itself, torch.export keeps them: after
    idioms both give the same ops, and both compile bit-exactly."""
    onnx_graph, x = _import(family, "onnx", tmp_path)
    torch_graph, _ = _import(family, "torch.export", tmp_path)
    census = [sorted(n.op.NAME for n in g.nodes()) for g in (onnx_graph, torch_graph)]
    assert census[0] == census[1]
    result, report = compile_and_verify(onnx_graph, "tiny", {"x": x})
    assert report.bit_exact, report.divergence
