"""External data is memory-mapped, not read: weights are read-only views of the .data file
(cimc/importers/onnx_external.py), shared by every import of the same file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from cimc.errors import CimcError
from cimc.importers import import_onnx
from cimc.ir.mapped import mapping_of, release_pages

rng = np.random.default_rng(11)
W = rng.standard_normal((8, 6)).astype(np.float32)
B = rng.standard_normal(6).astype(np.float32)


def _model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, "seq", 8])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, "seq", 6])
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["y"]),
    ]
    inits = [numpy_helper.from_array(W, "w"), numpy_helper.from_array(B, "b")]
    graph = helper.make_graph(nodes, "g", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _save(tmp_path: Path, offsets: tuple[int, int] = (0, 256)) -> Path:
    """The model with w and b in model.onnx.data at `offsets` (hand-placed, as exporters
    place them: the gap before b is padding)."""
    m = _model()
    data = bytearray(max(offsets) + 64)
    for tensor, at in zip(m.graph.initializer, offsets, strict=True):
        raw = numpy_helper.to_array(tensor).tobytes()
        data[at : at + len(raw)] = raw
        tensor.ClearField("raw_data")
        tensor.ClearField("float_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", "model.onnx.data"), ("offset", at), ("length", len(raw))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
    (tmp_path / "model.onnx.data").write_bytes(bytes(data))
    onnx.save_model(m, str(tmp_path / "model.onnx"))
    return tmp_path / "model.onnx"


def _weights(path: Path) -> list[np.ndarray]:
    graph = import_onnx(path, seq_len=3)
    return [v for v in graph.constants().values() if v.size > 1]


def test_weights_are_views_of_the_data_file(tmp_path: Path) -> None:
    weights = _weights(_save(tmp_path))
    assert sorted(w.shape for w in weights) == [(6,), (8, 6)]
    for w in weights:
        assert mapping_of(w) is not None and not w.flags.writeable
        np.testing.assert_array_equal(w, W if w.ndim == 2 else B)
    again = _weights(tmp_path / "model.onnx")  # a second import shares the mapping
    assert {id(a.base) for a in again} == {id(w.base) for w in weights}


def test_misaligned_offset_is_read_not_mapped(tmp_path: Path) -> None:
    weights = _weights(_save(tmp_path, offsets=(0, 257)))  # b's floats at an odd offset
    bias = next(w for w in weights if w.ndim == 1)
    assert mapping_of(bias) is None
    np.testing.assert_array_equal(bias, B)


def test_bad_offsets_are_one_line_errors(tmp_path: Path) -> None:
    path = _save(tmp_path)
    m = onnx.load(str(path), load_external_data=False)
    entry = next(e for e in m.graph.initializer[1].external_data if e.key == "offset")
    entry.value = "4096"  # past the end of the file
    onnx.save_model(m, str(path))
    with pytest.raises(CimcError, match="initializer 'b' has 0 bytes of external data"):
        import_onnx(path, seq_len=3)
    entry.value = "twelve"
    onnx.save_model(m, str(path))
    with pytest.raises(CimcError, match="initializer 'b' has a malformed external data offset"):
        import_onnx(path, seq_len=3)


def test_released_pages_read_back_unchanged(tmp_path: Path) -> None:
    weights = _weights(_save(tmp_path))
    assert release_pages(weights) == 1  # both weights view one mapping
    for w in weights:
        np.testing.assert_array_equal(w, W if w.ndim == 2 else B)
    assert release_pages([np.zeros(3)]) == 0
