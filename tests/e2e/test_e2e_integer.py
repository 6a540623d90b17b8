"""Integer ops end to end: position ids (cumsum), mask logic and lookups in constant integer
tables, compiled and run bit-exactly, and equal to PyTorch's own integer results."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import cimc
from cimc.errors import CimcError
from cimc.ir.graph import Graph
from tests.e2e.e2e_helpers import ARCHS, compile_and_verify

PAD = 1
IDS = torch.tensor([[5, 7, 1, 9, 1, 1, 4, 2, 8], [1, 1, 3, 3, 3, 3, 3, 1, 6]])


class PositionIds(torch.nn.Module):
    """RoBERTa's create_position_ids_from_input_ids, mixed with more integer logic, and a
    float lookup of the positions (what the model does with them)."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.emb = torch.nn.Embedding(16, 8)
        with torch.no_grad():
            self.emb.weight.copy_(torch.randn(16, 8, generator=gen))

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = ids.ne(PAD).int()
        pos = (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + PAD
        mixed = torch.where(pos > 3, pos, ids) - torch.minimum(ids, pos) * 2
        keep = (ids < 4) | (pos >= 5)
        return mixed + keep.long(), self.emb(pos) + self.emb(ids)  # ids: calibration's vocab


def _graph(model: cimc.CompiledModel) -> Graph:
    assert model.result is not None
    return model.result.float_graph


def _census(graph: Graph) -> Counter[str]:
    return Counter(n.op.NAME for n in graph.nodes())


@pytest.mark.parametrize("arch_name", ARCHS)
def test_position_ids_bit_exact_and_equal_to_torch(arch_name: str) -> None:
    module = PositionIds().eval()
    model = cimc.compile(module, example_inputs=(IDS,), arch=arch_name)
    ops = _census(_graph(model))
    assert {"cumsum", "equal", "logical_not", "greater", "less", "where", "minimum"} <= set(ops)
    got_ids, got_emb = model.run(IDS)
    want_ids, want_emb = module(IDS)
    np.testing.assert_array_equal(np.asarray(got_ids), want_ids.numpy())  # exact integers
    np.testing.assert_allclose(np.asarray(got_emb), want_emb.detach().numpy(), atol=0.05)
    assert model.verify(IDS).bit_exact


def _scan_model(exclusive: int, reverse: int, axis: int, tmp_path: Path) -> Path:
    table = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    nodes = [
        helper.make_node("CumSum", ["ids", "axis"], ["scan"], exclusive=exclusive, reverse=reverse),
        helper.make_node("Gather", ["table", "ids"], ["emb"]),  # an output named as its node
    ]
    graph = helper.make_graph(
        nodes,
        "scan",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 9])],
        [
            helper.make_tensor_value_info("scan", TensorProto.INT64, None),
            helper.make_tensor_value_info("emb", TensorProto.FLOAT, None),
        ],
        [
            numpy_helper.from_array(np.array(axis, np.int64), "axis"),
            numpy_helper.from_array(table, "table"),
        ],
    )
    made = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    made.ir_version = 8
    path = tmp_path / "scan.onnx"
    onnx.save(made, str(path))
    return path


def _onnx_scan(x: np.ndarray, exclusive: int, reverse: int, axis: int) -> np.ndarray:
    y = np.flip(x, axis) if reverse else x
    y = np.cumsum(y, axis=axis)
    if exclusive:
        y = y - (np.flip(x, axis) if reverse else x)
    return np.flip(y, axis) if reverse else y


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
def test_cumsum_variants_on_the_vector_unit(exclusive: int, reverse: int, tmp_path: Path) -> None:
    """ONNX CumSum's exclusive / reverse forms: the log-step scan (9 columns: four steps,
    a partial last one) equals numpy's running sums."""
    path = _scan_model(exclusive, reverse, -1, tmp_path)
    model = cimc.compile(str(path), arch="tiny")
    ids = IDS.numpy() * 3 + 2
    scan, _ = model.run(ids)
    np.testing.assert_array_equal(np.asarray(scan), _onnx_scan(ids, exclusive, reverse, 1))
    assert model.verify(ids).bit_exact


def test_cumsum_over_a_leading_axis_is_refused_by_name(tmp_path: Path) -> None:
    path = _scan_model(0, 0, 0, tmp_path)
    with pytest.raises(CimcError, match=r"cumsum over axis 0 .* only the last axis scans"):
        cimc.compile(str(path), arch="tiny")


class TokenTypes(torch.nn.Module):
    """RoBERTa's token-type ids: a constant buffer gathered at run-time positions, then a
    second table read at them; plus an index_select on axis 1 of a constant."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.register_buffer("types", (torch.arange(12) % 3).expand(1, -1).contiguous())
        self.register_buffer("grid", torch.randint(-50, 50, (3, 12), generator=gen))
        self.table = torch.nn.Embedding(3, 4)

    def forward(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        types = torch.gather(self.types.expand(pos.shape[0], -1), 1, pos)
        picked = torch.index_select(self.grid, 1, pos[0])
        return picked, self.table(types)


def test_gather_of_constants_at_run_time_positions() -> None:
    module = TokenTypes().eval()
    pos = torch.tensor([[0, 4, 5, 11, 2, 7], [3, 3, 10, 1, 0, 6]])
    model = cimc.compile(module, example_inputs=(pos,), arch="tiny")
    assert _census(_graph(model))["embedding"] == 3  # two integer lookups and the float table
    picked, emb = model.run(pos)
    want_picked, want_emb = module(pos)
    np.testing.assert_array_equal(np.asarray(picked), want_picked.numpy())
    np.testing.assert_allclose(np.asarray(emb), want_emb.detach().numpy(), atol=0.05)
    result, report = compile_and_verify(_graph(model), "default", {"pos": pos.numpy()})
    assert report.bit_exact
