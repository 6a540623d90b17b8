"""ONNX CumSum and gathers of constants at run-time indices, against onnxruntime: CumSum's
exclusive / reverse forms, GatherElements (RoBERTa's token-type buffer) and Gather on any
axis of a constant, spelled as embedding lookups (cimc/importers/table_lookup.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from onnx import helper
from onnx_build import check_against_ort, model, save

from cimc.errors import CimcError

rng = np.random.default_rng(0)


def _ops(graph) -> Counter[str]:  # type: ignore[no-untyped-def]
    return Counter(n.op.NAME for n in graph.nodes() if n.op.NAME not in ("input", "constant"))


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
def test_cumsum(axis: int, exclusive: int, reverse: int, tmp_path: Path) -> None:
    nodes = [helper.make_node("CumSum", ["x", "axis"], ["y"], exclusive=exclusive, reverse=reverse)]
    m = model(nodes, {"x": (np.float32, [3, 5])}, ["y"], {"axis": np.array(axis, np.int64)})
    graph = check_against_ort(
        save(m, tmp_path), {"x": rng.standard_normal((3, 5)).astype(np.float32)}
    )
    assert _ops(graph) == Counter({"cumsum": 1})


def test_cumsum_needs_a_constant_axis(tmp_path: Path) -> None:
    nodes = [helper.make_node("CumSum", ["x", "axis"], ["y"])]
    m = model(nodes, {"x": (np.float32, [3, 5]), "axis": (np.int64, [])}, ["y"])
    with pytest.raises(CimcError, match="CumSum needs a constant axis"):
        check_against_ort(save(m, tmp_path), {})


@pytest.mark.parametrize("axis", [0, 1])
def test_gather_elements_of_a_constant(axis: int, tmp_path: Path) -> None:
    data = rng.standard_normal((4, 6)).astype(np.float32)
    shape = [3, 6] if axis == 0 else [4, 5]
    nodes = [helper.make_node("GatherElements", ["data", "idx"], ["y"], axis=axis)]
    m = model(nodes, {"idx": (np.int64, shape)}, ["y"], {"data": data})
    idx = rng.integers(0, data.shape[axis], shape).astype(np.int64)
    graph = check_against_ort(save(m, tmp_path), {"idx": idx})
    assert _ops(graph)["embedding"] == 1


def test_gather_elements_of_an_expanded_buffer_reads_one_row(tmp_path: Path) -> None:
    """The rows of RoBERTa's token-type buffer are equal: the lookup reads one of them, at
    the index itself (no offset per row)."""
    data = np.broadcast_to(np.arange(10, dtype=np.float32) * 0.5, (2, 10)).copy()
    nodes = [helper.make_node("GatherElements", ["data", "idx"], ["y"], axis=1)]
    m = model(nodes, {"idx": (np.int64, [2, 7])}, ["y"], {"data": data})
    graph = check_against_ort(save(m, tmp_path), {"idx": rng.integers(0, 10, (2, 7))})
    assert _ops(graph) == Counter({"embedding": 1, "reshape": 1})
    tables = [n for n in graph.nodes() if n.op.NAME == "constant" and n.type.shape == (10, 1)]
    assert len(tables) == 1


@pytest.mark.parametrize("axis", [1, 2])
def test_gather_of_a_constant_on_a_later_axis(axis: int, tmp_path: Path) -> None:
    data = rng.standard_normal((2, 5, 4)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["data", "idx"], ["y"], axis=axis)]
    m = model(nodes, {"idx": (np.int64, [3])}, ["y"], {"data": data})
    graph = check_against_ort(save(m, tmp_path), {"idx": np.array([0, 3, 1], np.int64)})
    assert _ops(graph)["embedding"] == 1
