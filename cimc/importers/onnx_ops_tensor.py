"""Handlers of layout and data-movement ops: reshape family, transpose, slice, concat...

Shapes are static after binding, so every shape operand is a constant here; a shape
computed from a run-time value (Shape of a Ref) folds to a constant immediately.
"""

from __future__ import annotations

import numpy as np
import onnx

from cimc.importers.onnx_gather import lower_index_op
from cimc.importers.onnx_translate import Ref, Translator, Value, handles
from cimc.ir import ops


def _const(t: Translator, value: Value | None, what: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise t.fail(f"{what} must be a constant (it depends on run-time data)")
    return value


def _ints(t: Translator, value: Value | None, what: str) -> list[int]:
    return [int(v) for v in _const(t, value, what).reshape(-1)]


def _axes(t: Translator, inputs: list[Value | None], position: int) -> list[int] | None:
    if len(inputs) > position and inputs[position] is not None:
        return _ints(t, inputs[position], "axes")
    attrs = t.attrs()
    return [int(a) for a in attrs["axes"]] if "axes" in attrs else None


def _reshape_to(t: Translator, x: Ref, shape: list[int]) -> Ref:
    if tuple(shape) == t.type_of(x).shape:
        return x
    return t.emit(ops.Reshape(tuple(shape)), [x])


@handles("Identity", "Dropout")
def identity(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    if len(node.output) > 1 and node.output[1]:
        raise t.fail("Dropout's mask output is not supported (export in eval mode)")
    return [inputs[0]] if inputs[0] is not None else []


@handles("Shape")
def shape(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    attrs = t.attrs()
    dims = np.array(t.type_of(t.ref(inputs[0])).shape, dtype=np.int64)
    return [dims[attrs.get("start", 0) : attrs.get("end", None)]]


@handles("Size")
def size(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    return [np.array(t.type_of(t.ref(inputs[0])).numel, dtype=np.int64)]


@handles("Reshape")
def reshape(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    x = t.ref(inputs[0])
    in_shape = t.type_of(x).shape
    target = _ints(t, inputs[1], "Reshape shape")
    allow_zero = bool(t.attrs().get("allowzero", 0))
    dims = [in_shape[k] if d == 0 and not allow_zero else d for k, d in enumerate(target)]
    if -1 in dims:
        known = int(np.prod([d for d in dims if d != -1]))
        dims[dims.index(-1)] = int(np.prod(in_shape)) // max(known, 1)
    return [_reshape_to(t, x, dims)]


@handles("Flatten")
def flatten(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    x = t.ref(inputs[0])
    in_shape = t.type_of(x).shape
    axis = int(t.attrs().get("axis", 1)) % (len(in_shape) + 1)
    outer = int(np.prod(in_shape[:axis]))
    return [_reshape_to(t, x, [outer, int(np.prod(in_shape[axis:]))])]


@handles("Unsqueeze")
def unsqueeze(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    x = t.ref(inputs[0])
    axes = _axes(t, inputs, 1) or []
    out = list(t.type_of(x).shape)
    rank = len(out) + len(axes)
    for axis in sorted(a % rank for a in axes):
        out.insert(axis, 1)
    return [_reshape_to(t, x, out)]


@handles("Squeeze")
def squeeze(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    x = t.ref(inputs[0])
    in_shape = t.type_of(x).shape
    axes = _axes(t, inputs, 1)
    drop = {a % len(in_shape) for a in axes} if axes is not None else None
    out = [d for k, d in enumerate(in_shape) if not (d == 1 and (drop is None or k in drop))]
    return [_reshape_to(t, x, out)]


@handles("Transpose")
def transpose(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    x = t.ref(inputs[0])
    rank = t.type_of(x).rank
    perm = tuple(int(p) for p in t.attrs().get("perm", range(rank - 1, -1, -1)))
    if perm == tuple(range(rank)):
        return [x]
    return [t.emit(ops.Transpose(perm), [x])]


@handles("Expand")
def expand(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    x = t.ref(inputs[0])
    in_shape = t.type_of(x).shape
    target = tuple(
        int(d) for d in np.broadcast_shapes(in_shape, tuple(_ints(t, inputs[1], "shape")))
    )
    if target == in_shape:
        return [x]
    return [t.emit(ops.Expand(target), [x])]


@handles("Slice")
def slice_(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    x = t.ref(inputs[0])
    in_shape = t.type_of(x).shape
    starts = _ints(t, inputs[1], "Slice starts")
    ends = _ints(t, inputs[2], "Slice ends")
    axes = _axes(t, inputs, 3) or list(range(len(starts)))
    steps = _ints(t, inputs[4], "Slice steps") if len(inputs) > 4 and inputs[4] is not None else []
    steps = steps or [1] * len(starts)
    for k, (start, end, axis, step) in enumerate(zip(starts, ends, axes, steps, strict=True)):
        if step < 1:
            raise t.fail(f"Slice with step {step} is not supported (only forward slices)")
        dim = in_shape[axis % len(in_shape)]
        lo, hi, _ = slice(start, end, step).indices(dim)
        if (lo, max(lo, hi), step) != (0, dim, 1):
            x = t.emit(ops.Slice(axis % len(in_shape), lo, max(lo, hi), step), [x], f"s{k}")
    return [x]


@handles("Split")
def split(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    x = t.ref(inputs[0])
    attrs = t.attrs()
    in_shape = t.type_of(x).shape
    axis = int(attrs.get("axis", 0)) % len(in_shape)
    if len(inputs) > 1 and inputs[1] is not None:
        sizes = _ints(t, inputs[1], "Split sizes")
    elif "split" in attrs:
        sizes = [int(s) for s in attrs["split"]]
    else:
        count = int(attrs.get("num_outputs", len(node.output)))
        chunk = -(-in_shape[axis] // count)
        sizes = [min(chunk, in_shape[axis] - k * chunk) for k in range(count)]
    outputs: list[Value] = []
    start = 0
    for k, n in enumerate(sizes):
        outputs.append(t.emit(ops.Slice(axis, start, start + n, 1), [x], f"part{k}"))
        start += n
    return outputs


@handles("Concat")
def concat(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    like = next(v for v in inputs if isinstance(v, Ref))
    refs = [t.ref(v, like) for v in inputs if v is not None]
    if len(refs) == 1:
        return [refs[0]]
    return [t.emit(ops.Concat(int(t.attrs()["axis"])), refs)]


@handles("Gather", "GatherElements", "GatherND")
def gather(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    data, index = inputs[0], inputs[1]
    if isinstance(data, np.ndarray) and isinstance(index, Ref):
        return [_embedding(t, node, data, index)]
    if not isinstance(index, np.ndarray):
        raise t.fail(f"{node.op_type} with run-time indices into run-time data is not supported")
    x = t.ref(data)
    axis = int(t.attrs().get("axis", 0))
    if node.op_type == "Gather" and index.ndim == 0:
        return [t.emit(ops.Gather(axis, int(index)), [x])]
    return [lower_index_op(t, node, x, inputs)]


def _embedding(t: Translator, node: onnx.NodeProto, table: np.ndarray, ids: Ref) -> Ref:
    if node.op_type != "Gather" or int(t.attrs().get("axis", 0)) != 0 or table.ndim != 2:
        raise t.fail(f"{node.op_type} on a constant table is supported as a 2-D embedding only")
    return t.emit(ops.Embedding(), [ids, table])
