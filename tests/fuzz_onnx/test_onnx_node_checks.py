"""Bad ONNX nodes are refused by explicit checks (schema, operand values), one line each;
an exception a handler still raises is an internal error, not a "bad model" message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cimc.api import import_model
from cimc.cli import main
from cimc.errors import CimcError, InternalError
from cimc.importers import onnx_translate


def _save(nodes: list[onnx.NodeProto], tmp_path: Path, **consts: np.ndarray) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inits = [numpy_helper.from_array(v, k) for k, v in consts.items()]
    graph = helper.make_graph(nodes, "g", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    return path


def _refused(path: Path) -> str:
    with pytest.raises(CimcError) as info:
        import_model(path)
    text = str(info.value)
    assert "\n" not in text and info.value.location == "n"
    return text


def test_attribute_of_the_wrong_type(tmp_path: Path) -> None:
    node = helper.make_node("Softmax", ["x"], ["y"], name="n", axis="last")
    assert "Softmax attribute 'axis' must be of type INT, got STRING" in _refused(
        _save([node], tmp_path)
    )


def test_missing_required_attribute(tmp_path: Path) -> None:
    node = helper.make_node("Concat", ["x", "x"], ["y"], name="n")
    assert "Concat needs its 'axis' attribute" in _refused(_save([node], tmp_path))


def test_required_input_left_empty(tmp_path: Path) -> None:
    node = helper.make_node("Add", ["", "x"], ["y"], name="n")
    assert "Add input 0 ('A') is required but left empty" in _refused(_save([node], tmp_path))


def test_too_many_inputs(tmp_path: Path) -> None:
    node = helper.make_node("Relu", ["x", "x"], ["y"], name="n")
    assert "Relu takes 1 inputs, the node has 2" in _refused(_save([node], tmp_path))


def test_slice_operands_of_different_lengths(tmp_path: Path) -> None:
    """Fuzz seeds 148 / 310: zip(strict=True) raised ValueError inside the handler."""
    node = helper.make_node("Slice", ["x", "s", "e"], ["y"], name="n")
    path = _save([node], tmp_path, s=np.array([0, 1], np.int64), e=np.array([1], np.int64))
    assert "differ in length" in _refused(path)


def test_slice_starts_of_a_float_type(tmp_path: Path) -> None:
    """Fuzz seed 121: an initializer retyped to float reached int() of a string."""
    node = helper.make_node("Slice", ["x", "s", "e"], ["y"], name="n")
    path = _save([node], tmp_path, s=np.array([0.5], np.float32), e=np.array([1], np.int64))
    assert "Slice starts must be integers, got float32" in _refused(path)


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (helper.make_node("ReduceMean", ["x"], ["y"], name="n", axes=[7]), "axis 7 is out"),
        (helper.make_node("Flatten", ["x"], ["y"], name="n", axis=9), "axis 9 is out"),
        (helper.make_node("Squeeze", ["x", "a"], ["y"], name="n"), "axis -9 is out"),
        (helper.make_node("Split", ["x", "b"], ["y", "z"], name="n", axis=1), "Split sizes"),
    ],
)
def test_axis_out_of_range(node: onnx.NodeProto, message: str, tmp_path: Path) -> None:
    path = _save([node], tmp_path, a=np.array([-9], np.int64), b=np.array([1, 1], np.int64))
    assert message in _refused(path)


def _broken_relu(*args: object) -> list[object]:
    raise TypeError("a bug in the handler")


def test_handler_bug_is_an_internal_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(onnx_translate.HANDLERS, "Relu", _broken_relu)
    path = _save([helper.make_node("Relu", ["x"], ["y"], name="n")], tmp_path)
    with pytest.raises(InternalError) as info:
        import_model(path)
    assert not isinstance(info.value, CimcError)  # never mistaken for a bad model
    assert isinstance(info.value.__cause__, TypeError)
    assert str(info.value).startswith("n: internal error, a cimc bug")


def test_cli_prints_an_internal_error_on_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(onnx_translate.HANDLERS, "Relu", _broken_relu)
    path = _save([helper.make_node("Relu", ["x"], ["y"], name="n")], tmp_path)
    code = main(["compile", str(path), "--arch", "tiny", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1
    assert err[0] == (
        "n: internal error, a cimc bug (please report it with the model): TypeError while "
        "translating Relu node: a bug in the handler"
    )


@pytest.mark.parametrize("value", [b"\xff\xfe", b"exact"])
def test_gelu_approximate_not_none_or_tanh(value: bytes, tmp_path: Path) -> None:
    """Fuzz seed 1026: a flipped bit in the attribute failed to decode inside the handler."""
    node = helper.make_node("Gelu", ["x"], ["y"], name="n", approximate=value)
    path = _save([node], tmp_path)
    model = onnx.load(str(path))
    model.opset_import[0].version = 20
    onnx.save(model, str(path))
    assert "Gelu approximate must be 'none' or 'tanh'" in _refused(path)
