"""Evaluate ONNX nodes whose inputs are all constants (shape arithmetic, weight prep).

Common shape ops have numpy fast paths (a BERT export folds ~100 nodes per layer);
every other op runs through ONNX's own reference implementation, so folding follows
the ONNX spec of the model's opset.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from cimc.errors import CimcError
from cimc.importers.onnx_tensor import tensor_array

Arrays = list[np.ndarray | None]
FastPath = Callable[[dict, Arrays], list[np.ndarray]]


def attributes(node: onnx.NodeProto) -> dict:
    """Attribute values by name (tensors as numpy arrays, checked like initializers)."""
    out = {}
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        if isinstance(value, onnx.TensorProto):
            value = tensor_array(value, f"attribute '{attr.name}' of node '{node.name}'")
        out[attr.name] = value
    return out


def constant_value(node: onnx.NodeProto) -> np.ndarray:
    """The value of a Constant node (any of its value_* attributes)."""
    attrs = attributes(node)
    for key in ("value", "value_float", "value_int", "value_floats", "value_ints"):
        if key in attrs:
            value = np.asarray(attrs[key])
            if key in ("value_float", "value_floats"):
                value = value.astype(np.float32)
            elif key in ("value_int", "value_ints"):
                value = value.astype(np.int64)
            return value
    raise CimcError(f"Constant node has no supported value attribute: {sorted(attrs)}", node.name)


def evaluate(node: onnx.NodeProto, inputs: Arrays, opset: int) -> list[np.ndarray]:
    """Outputs of `node` on constant `inputs` (None for an absent optional input)."""
    _refuse_huge(node, inputs)
    fast = _FAST.get(node.op_type)
    if fast is not None:
        try:
            result = fast(attributes(node), inputs)
        except (ValueError, TypeError, IndexError):
            result = []  # operands the fast path does not take: the spec decides (or refuses)
        if result:
            return [np.asarray(r) for r in result]
    return _reference(node, inputs, opset)


_FOLD_LIMIT = 1 << 28  # elements: the shape-building ops are checked before they allocate


def _refuse_huge(node: onnx.NodeProto, inputs: Arrays) -> None:
    """ConstantOfShape / Expand / Tile / Range sized by data: refuse absurd sizes first."""
    count = 0
    if node.op_type in ("ConstantOfShape", "Expand") and inputs[-1] is not None:
        dims = [abs(int(d)) for d in np.asarray(inputs[-1]).reshape(-1)]
        count = int(np.prod(dims, dtype=object)) if dims else 1
    elif node.op_type == "Tile" and len(inputs) == 2 and inputs[0] is not None:
        reps = [abs(int(r)) for r in np.asarray(inputs[1]).reshape(-1)]
        count = int(inputs[0].size) * int(np.prod(reps, dtype=object))
    elif node.op_type == "Range" and len(inputs) == 3 and all(i is not None for i in inputs):
        start, limit, delta = (float(np.asarray(i).reshape(-1)[0]) for i in inputs)  # type: ignore[union-attr]
        count = int(abs((limit - start) / delta)) if delta and np.isfinite(start + limit) else 0
    if count > _FOLD_LIMIT:
        raise CimcError(
            f"{node.op_type} node '{node.name}' would build {count:,} elements, more than "
            f"cimc's limit of {_FOLD_LIMIT:,}; check the model's shapes",
            node.name or node.op_type,
        )


def _reference(node: onnx.NodeProto, inputs: Arrays, opset: int) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    feeds = {n: v for n, v in zip(node.input, inputs, strict=False) if n}
    try:
        outputs = ReferenceEvaluator(node, opsets={"": opset}).run(None, feeds)
    except Exception as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise CimcError(
            f"cannot fold {node.op_type}: {reason}", node.name or node.op_type
        ) from None
    return [np.asarray(o) for o in outputs]


def _axes(attrs: dict, inputs: Arrays, position: int) -> list[int] | None:
    """Axes from an input (newer opsets) or from the attribute (older ones)."""
    if len(inputs) > position and inputs[position] is not None:
        return [int(a) for a in np.asarray(inputs[position]).reshape(-1)]
    if "axes" in attrs:
        return [int(a) for a in attrs["axes"]]
    return None


def _unsqueeze(attrs: dict, inputs: Arrays) -> list[np.ndarray]:
    x = inputs[0]
    assert x is not None
    axes = _axes(attrs, inputs, 1) or []
    rank = x.ndim + len(axes)
    shape = list(x.shape)
    for axis in sorted(a % rank for a in axes):
        shape.insert(axis, 1)
    return [x.reshape(shape)]


def _squeeze(attrs: dict, inputs: Arrays) -> list[np.ndarray]:
    x = inputs[0]
    assert x is not None
    axes = _axes(attrs, inputs, 1)
    if axes is None:
        return [np.squeeze(x)]
    return [np.squeeze(x, axis=tuple(a % x.ndim for a in axes))]


def _gather(attrs: dict, inputs: Arrays) -> list[np.ndarray]:
    data, index = inputs[0], inputs[1]
    assert data is not None and index is not None
    axis = int(attrs.get("axis", 0))
    index = np.where(index < 0, index + data.shape[axis], index)
    return [np.take(data, index, axis=axis)]


def _gather_elements(attrs: dict, inputs: Arrays) -> list[np.ndarray]:
    data, index = inputs[0], inputs[1]
    assert data is not None and index is not None
    axis = int(attrs.get("axis", 0)) % data.ndim
    index = np.where(index < 0, index + data.shape[axis], index)
    return [np.take_along_axis(data, index, axis=axis)]


def _shape(attrs: dict, inputs: Arrays) -> list[np.ndarray]:
    assert inputs[0] is not None
    shape = np.array(inputs[0].shape, dtype=np.int64)
    start, end = attrs.get("start", 0), attrs.get("end")
    return [shape[start:end]]


def _concat(attrs: dict, inputs: Arrays) -> list[np.ndarray]:
    arrays = [a for a in inputs if a is not None]
    return [np.concatenate(arrays, axis=int(attrs["axis"]))]


def _cast(attrs: dict, inputs: Arrays) -> list[np.ndarray]:
    assert inputs[0] is not None
    to = int(attrs["to"])
    if to not in onnx.TensorProto.DataType.values() or to == onnx.TensorProto.UNDEFINED:
        raise CimcError(f"Cast to unknown tensor type {to}")
    dtype = onnx.helper.tensor_dtype_to_np_dtype(to)
    return [inputs[0].astype(dtype)]


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> FastPath:
    def run(attrs: dict, inputs: Arrays) -> list[np.ndarray]:
        a, b = inputs[0], inputs[1]
        assert a is not None and b is not None
        if a.dtype.kind in "iu" and fn is np.divide:
            return []  # integer Div truncates toward zero: let the reference do it
        result = np.asarray(fn(a, b))
        if result.dtype != np.bool_:
            result = result.astype(np.result_type(a, b), copy=False)
        return [result]

    return run


def _identity(attrs: dict, inputs: Arrays) -> list[np.ndarray]:
    assert inputs[0] is not None
    return [inputs[0]]


def _transpose(attrs: dict, inputs: Arrays) -> list[np.ndarray]:
    assert inputs[0] is not None
    perm = attrs.get("perm")
    return [np.transpose(inputs[0], perm)]


_FAST: dict[str, FastPath] = {
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Gather": _gather,
    "GatherElements": _gather_elements,
    "Shape": _shape,
    "Concat": _concat,
    "Cast": _cast,
    "Add": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": _binary(np.divide),
    "Equal": _binary(np.equal),
    "Identity": _identity,
    "Transpose": _transpose,
}
