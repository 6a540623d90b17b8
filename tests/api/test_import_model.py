"""cimc.api.import_model: dispatch by source kind, errors, and agreement of the importers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from cimc.api import import_model
from cimc.errors import CimcError
from cimc.ir import Graph
from cimc.reference.float_model import FloatModel
from cimc.zoo import build_model, example_inputs, export_onnx


def census(graph: Graph) -> Counter[str]:
    return Counter(n.op.NAME for n in graph.nodes())


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.nn.functional.gelu(self.fc1(x)))


X = torch.randn(2, 5, 4)


def check_mlp(graph: Graph) -> None:
    assert census(graph) == {"input": 1, "constant": 4, "linear": 2, "gelu": 1}
    got = FloatModel(graph).run({graph.input_nodes()[0].name: X.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(next(iter(got.values())), Mlp()(X).numpy(), rtol=1e-5, atol=1e-6)


def test_module() -> None:
    check_mlp(import_model(Mlp(), example_inputs=(X,)))


def test_keyword_example_inputs() -> None:
    check_mlp(import_model(Mlp(), example_inputs={"x": X}))


def test_exported_program() -> None:
    check_mlp(import_model(torch.export.export(Mlp(), (X,))))


def test_graph_module() -> None:
    check_mlp(import_model(torch.fx.symbolic_trace(Mlp()), example_inputs=X))


def test_pt2_file(tmp_path: Path) -> None:
    path = tmp_path / "mlp.pt2"
    torch.export.save(torch.export.export(Mlp(), (X,)), path)
    graph = import_model(str(path))
    assert graph.name == "mlp"
    check_mlp(graph)


def onnx_linear(path: Path) -> Path:
    """y = x @ W + b with symbolic batch and sequence axes, built with onnx.helper."""
    weight = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "W")
    bias = numpy_helper.from_array(np.ones(3, dtype=np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 3])],
        [weight, bias],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_onnx_file(tmp_path: Path) -> None:
    graph = import_model(onnx_linear(tmp_path / "tiny.onnx"), seq_len=6)
    assert census(graph)["linear"] == 1
    assert graph.input_nodes()[0].type.shape == (1, 6, 4)


def test_onnx_shapes_from_named_example_inputs(tmp_path: Path) -> None:
    graph = import_model(
        onnx_linear(tmp_path / "tiny.onnx"), example_inputs={"x": torch.zeros(3, 2, 4)}
    )
    assert graph.input_nodes()[0].type.shape == (3, 2, 4)


def test_onnx_with_positional_example_inputs(tmp_path: Path) -> None:
    with pytest.raises(CimcError, match=r"as a dict \{input name: tensor\}"):
        import_model(onnx_linear(tmp_path / "tiny.onnx"), example_inputs=(torch.zeros(1, 2, 4),))


def test_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(
        CimcError, match=r"unknown model file type '.bin'; cimc imports .onnx, .pt2"
    ) as info:
        import_model(tmp_path / "model.bin")
    assert info.value.location == str(tmp_path / "model.bin")


def test_unsupported_object() -> None:
    with pytest.raises(CimcError, match="cannot import a dict"):
        import_model({"weights": 1})


def onnx_and_torch(
    family: str, exporter: str, tmp_path: Path
) -> tuple[Graph, Graph, np.ndarray, dict]:
    model = (
        build_model(family, head="lm", num_hidden_layers=1)
        if family != "gpt2"
        else build_model(family, head="lm", n_layer=1)
    )
    ids, mask = example_inputs(model, seq_len=7, padded=True)
    path = export_onnx(model, (ids, mask), tmp_path / f"{family}.onnx", exporter=exporter)
    with torch.no_grad():
        want = model(ids, mask).numpy()
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    return import_model(path, seq_len=7), import_model(model, (ids, mask)), want, feeds


def agree(family: str, exporter: str, tmp_path: Path) -> None:
    from_onnx, from_torch, want, feeds = onnx_and_torch(family, exporter, tmp_path)
    assert census(from_onnx) == census(from_torch)
    for graph in (from_onnx, from_torch):
        got = FloatModel(graph).run(feeds)["output"]
        assert np.abs(got - want).max() / np.abs(want).max() < 1e-4


def test_onnx_and_torch_export_agree_on_bert(tmp_path: Path) -> None:
    agree("bert", "legacy", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "qwen2", "distilbert"])
def test_onnx_and_torch_export_agree(family: str, exporter: str, tmp_path: Path) -> None:
    agree(family, exporter, tmp_path)
