"""Importer crashes found by the ONNX fuzzer, each now a one-line CimcError."""

from __future__ import annotations

import random
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from cimc.api import import_model
from cimc.errors import CimcError
from tests.fuzz_onnx.harness import base_models, fuzz_one
from tests.fuzz_onnx.mutate import absurd_constant_shape


def _mlp() -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.ParseFromString(base_models()["mlp"])
    return model


def _refused(model: onnx.ModelProto, tmp_path: Path) -> str:
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(CimcError) as info:
        import_model(path)
    text = str(info.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("dim", (10**12, 2**62, -5))
def test_absurd_initializer_dims(dim: int, tmp_path: Path) -> None:
    model = _mlp()
    model.graph.initializer[0].dims[0] = dim
    text = _refused(model, tmp_path)
    assert f"initializer '{model.graph.initializer[0].name}'" in text
    assert "limit" in text or "negative" in text or "bytes" in text


def test_initializer_data_shorter_than_dims(tmp_path: Path) -> None:
    model = _mlp()
    tensor = next(t for t in model.graph.initializer if t.raw_data)
    tensor.raw_data = tensor.raw_data[:-3]
    assert "the model is corrupt" in _refused(model, tmp_path)


def test_initializer_of_unknown_type(tmp_path: Path) -> None:
    model = _mlp()
    model.graph.initializer[0].data_type = 99
    assert "unknown tensor data type 99" in _refused(model, tmp_path)


def test_constant_of_shape_1e12_refused_before_allocating(tmp_path: Path) -> None:
    model = _mlp()
    for seed in range(20):  # a seed where the absurd constant feeds a run-time node
        candidate = _mlp()
        absurd_constant_shape(candidate, random.Random(seed))
        if any("absurd_out" in n.input for n in candidate.graph.node[2:]):
            model = candidate
            break
    assert "would build 1,000,000,000,000 elements" in _refused(model, tmp_path)


def test_layer_norm_on_a_scalar(tmp_path: Path) -> None:
    """LayerNormalization of a rank-0 value used to divide by zero."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [1.0])
    node = helper.make_node("LayerNormalization", ["x", "s"], ["y"], name="ln")
    graph = helper.make_graph([node], "g", [x], [y], [scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert "ln" in _refused(model, tmp_path)


def test_binary_with_missing_operand(tmp_path: Path) -> None:
    model = _mlp()
    node = next(n for n in model.graph.node if n.op_type in ("Add", "MatMul", "Gemm"))
    del node.input[1:]
    text = _refused(model, tmp_path)
    assert f"{node.op_type} takes 2" in text and "inputs, the node has 1" in text


def test_input_of_1e12_elements_refused(tmp_path: Path) -> None:
    """An input dim of 10^12 was imported; default inputs then tried to allocate 87 TiB."""
    model = _mlp()
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 10**12
    text = _refused(model, tmp_path)
    assert text.startswith("x: input 'x' of shape [1, 1000000000000, 12]") and "limit" in text


def test_input_of_unknown_element_type(tmp_path: Path) -> None:
    """An elem_type outside the enum crashed while naming it in the error."""
    model = _mlp()
    model.graph.input[0].type.tensor_type.elem_type = 99
    assert "tensors of type #99 (unknown) are not supported" in _refused(model, tmp_path)


def test_name_with_a_newline_refused_on_one_line(tmp_path: Path) -> None:
    model = _mlp()
    old = model.graph.input[0].name
    model.graph.input[0].name = "x\ny"
    for node in model.graph.node:
        node.input[:] = ["x\ny" if n == old else n for n in node.input]
    assert "control or non-UTF-8 characters ('x\\ny')" in _refused(model, tmp_path)


def test_op_type_not_utf8_refused(tmp_path: Path) -> None:
    """Fuzz seed 3568 (a flipped bit in an op_type): the fold error printed a traceback-like
    multi-line message."""
    result = fuzz_one(3568, tmp_path)
    assert result.outcome == "refused" and "non-UTF-8" in result.detail


@pytest.mark.parametrize("seed", (21463, 21509, 23132))
def test_unknown_tensor_types_in_constants_and_casts(seed: int, tmp_path: Path) -> None:
    """Fuzz seeds 21463/21509 (a Constant value of data type 71/39) and 23132 (Cast to 99)
    reached numpy's dtype table inside the translation: now located one-line errors."""
    result = fuzz_one(seed, tmp_path)
    assert result.outcome == "refused"
    assert "unknown tensor data type" in result.detail or "Cast to unknown" in result.detail
    assert "/blocks.0/attn/" in result.detail.split(": ")[0]


def test_extreme_constant_node_is_not_compared(tmp_path: Path) -> None:
    """Fuzz seed 22289: a bit flip made a rotary table entry 3.3e38; onnxruntime overflows
    to NaN where cimc's float reference does not. Not comparable, like extreme weights."""
    result = fuzz_one(22289, tmp_path)
    assert result.outcome == "imported" and "not compared" in result.detail
