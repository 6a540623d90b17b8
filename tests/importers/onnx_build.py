"""Build small ONNX models from node lists for importer unit tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from cimc.api import import_model
from cimc.ir.graph import Graph
from cimc.reference.float_model import run_graph

_TYPES = {np.float32: TensorProto.FLOAT, np.int64: TensorProto.INT64, np.bool_: TensorProto.BOOL}


def model(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, tuple[type, list[int | str]]],
    outputs: list[str],
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 18,
) -> onnx.ModelProto:
    """A model with typed inputs, float outputs of unspecified shape, and weights."""
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info(n, _TYPES[t], dims) for n, (t, dims) in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(v, k) for k, v in (initializers or {}).items()],
    )
    made = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    made.ir_version = 8  # what onnxruntime 1.31 and opsets 13-18 accept
    return made


def const(name: str, value: np.ndarray | float | list) -> onnx.NodeProto:
    array = np.asarray(value, dtype=np.float32 if isinstance(value, float) else None)
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array))


def save(m: onnx.ModelProto, tmp_path: Path, name: str = "m.onnx") -> Path:
    path = tmp_path / name
    onnx.save(m, str(path))
    return path


def check_against_ort(path: Path, feeds: dict[str, np.ndarray], **kwargs: object) -> Graph:
    """Import `path` (canonical graph), run the float reference and onnxruntime on `feeds`;
    they must agree."""
    graph = import_model(path, **kwargs)  # type: ignore[arg-type]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    want = dict(zip(names, session.run(None, feeds), strict=True))
    got = run_graph(graph, feeds)
    for name in names:
        scale = max(float(np.abs(want[name]).max()), 1e-6)
        error = float(np.abs(got[name].astype(np.float64) - want[name]).max()) / scale
        assert error < 1e-5, f"output {name}: relative error {error:.2e}"
    return graph
