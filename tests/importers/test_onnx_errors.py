"""Bad input to the ONNX importer: one clear CimcError, never a traceback from deep inside."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx_build import check_against_ort, model, save

from cimc.errors import CimcError
from cimc.importers import import_onnx
from cimc.importers.onnx_dims import InputSpec, bind_shapes

rng = np.random.default_rng(1)


def _linear_model(opset: int = 18) -> onnx.ModelProto:
    w = rng.standard_normal((8, 4)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    return model(nodes, {"x": (np.float32, ["batch", "seq", 8])}, ["y"], {"w": w}, opset=opset)


def test_unknown_op_names_type_node_and_canonical_ops(tmp_path: Path) -> None:
    nodes = [helper.make_node("Hardmax", ["x"], ["y"], name="my_hardmax")]
    path = save(model(nodes, {"x": (np.float32, [2, 3])}, ["y"]), tmp_path)
    with pytest.raises(CimcError) as info:
        import_onnx(path)
    text = str(info.value)
    assert "Hardmax" in text and "my_hardmax" in text
    assert "layer_norm" in text and "attention" in text  # lists the canonical ops


def test_custom_domain_op_is_unknown(tmp_path: Path) -> None:
    nodes = [helper.make_node("FusedGelu", ["x"], ["y"], name="fg", domain="com.microsoft")]
    m = model(nodes, {"x": (np.float32, [2, 3])}, ["y"])
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(CimcError, match="FusedGelu.*com.microsoft"):
        import_onnx(save(m, tmp_path))


def test_corrupt_file(tmp_path: Path) -> None:
    path = save(_linear_model(), tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3] + b"\xff\xfe garbage")
    with pytest.raises(CimcError, match="valid ONNX|no ONNX graph") as info:
        import_onnx(path, seq_len=4)
    assert str(path) in str(info.value)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(CimcError, match="no ONNX graph"):
        import_onnx(empty)
    with pytest.raises(CimcError, match="no such ONNX file"):
        import_onnx(tmp_path / "nope.onnx")


def _external(tmp_path: Path) -> Path:
    path = tmp_path / "ext" / "model.onnx"
    path.parent.mkdir()
    onnx.save_model(
        _linear_model(), str(path), save_as_external_data=True,
        all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0,
    )  # fmt: skip
    return path


def test_external_data_loads_relative_to_the_model(tmp_path: Path) -> None:
    path = _external(tmp_path)
    assert (path.parent / "model.onnx.data").is_file()
    moved = tmp_path / "moved"
    shutil.copytree(path.parent, moved)  # a different directory: paths resolve from the model
    feeds = {"x": rng.standard_normal((1, 4, 8)).astype(np.float32)}
    graph = check_against_ort(moved / "model.onnx", feeds, seq_len=4)
    assert [n.op.NAME for n in graph.nodes()].count("linear") == 1


def test_missing_external_data(tmp_path: Path) -> None:
    path = _external(tmp_path)
    (path.parent / "model.onnx.data").unlink()
    with pytest.raises(CimcError, match="model.onnx.data.*copy it next to the model"):
        import_onnx(path, seq_len=4)


def test_truncated_external_data(tmp_path: Path) -> None:
    path = _external(tmp_path)
    data = path.parent / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:10])
    with pytest.raises(CimcError, match="external data"):
        import_onnx(path, seq_len=4)


def test_unbound_dynamic_dim_names_input_dim_and_flag(tmp_path: Path) -> None:
    path = save(_linear_model(), tmp_path)
    with pytest.raises(CimcError) as info:
        import_onnx(path)
    text = str(info.value)
    assert "'x'" in text and "seq" in text and "axis 1" in text
    assert "seq_len" in text and "--seq-len" in text and "--shape" in text


@pytest.mark.parametrize("opset", [12, 26])
def test_opset_out_of_range(tmp_path: Path, opset: int) -> None:
    with pytest.raises(CimcError, match=f"opset {opset} is not supported.*13 to 25"):
        import_onnx(save(_linear_model(opset), tmp_path), seq_len=4)


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_opsets_in_range_import(tmp_path: Path, opset: int) -> None:
    graph = import_onnx(save(_linear_model(opset), tmp_path), seq_len=3)
    assert graph.node("y").type.shape == (1, 3, 4)


def test_shape_binding_rules() -> None:
    specs = [
        InputSpec("input_ids", 7, ("batch", "seq")),
        InputSpec("mask", 7, ("batch", "seq")),
        InputSpec("extra", 1, (4, "seq", "k")),
    ]
    bound = bind_shapes(specs, shapes={"extra": (4, 9, 2)})
    assert bound == {"input_ids": (1, 9), "mask": (1, 9), "extra": (4, 9, 2)}
    assert bind_shapes(specs[:2], seq_len=5) == {"input_ids": (1, 5), "mask": (1, 5)}
    with pytest.raises(CimcError, match="fixed to 4"):
        bind_shapes(specs, shapes={"extra": (3, 9, 2)})
    with pytest.raises(CimcError, match="bound to both"):
        bind_shapes(specs, shapes={"input_ids": (1, 9), "mask": (1, 8)})
    with pytest.raises(CimcError, match="unknown input"):
        bind_shapes(specs, shapes={"ids": (1, 9)})
    with pytest.raises(CimcError, match="axis 2 \\('k'\\) of input 'extra'"):
        bind_shapes(specs, seq_len=4)
