"""Handlers of layout and data-movement ops: reshape family, transpose, slice, concat...

Shapes are static after binding, so every shape operand is a constant here; a shape
computed from a run-time value (Shape of a Ref) folds to a constant immediately.
"""

from __future__ import annotations

import numpy as np
import onnx

from cimc.importers.onnx_gather import lower_index_op
from cimc.importers.onnx_translate import Ref, Translator, Value, element_count, handles
from cimc.importers.table_lookup import lookup_of
from cimc.ir import DType, ops


def _const(t: Translator, value: Value | None, what: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise t.fail(f"{what} must be a constant (it depends on run-time data)")
    return value


def _ints(t: Translator, value: Value | None, what: str) -> list[int]:
    array = _const(t, value, what)
    if array.dtype.kind not in "iu":
        raise t.fail(f"{what} must be integers, got {array.dtype}")
    return [int(v) for v in array.reshape(-1)]


def _axes(t: Translator, inputs: list[Value | None], position: int) -> list[int] | None:
    if len(inputs) > position and inputs[position] is not None:
        return _ints(t, inputs[position], "axes")
    attrs = t.attrs()
    return [int(a) for a in attrs["axes"]] if "axes" in attrs else None


def _axis_set(t: Translator, axes: list[int], rank: int) -> list[int]:
    """Distinct axes made non-negative (located errors for out-of-range or repeated ones)."""
    out = [t.axis(a, rank) for a in axes]
    if len(set(out)) != len(out):
        raise t.fail(f"axes {axes} name an axis twice")
    return out


def _reshape_to(t: Translator, x: Ref, shape: list[int]) -> Ref:
    if tuple(shape) == t.type_of(x).shape:
        return x
    return t.emit(ops.Reshape(tuple(shape)), [x])


@handles("Identity", "Dropout")
def identity(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    if len(node.output) > 1 and node.output[1]:
        raise t.fail("Dropout's mask output is not supported (export in eval mode)")
    training = inputs[2] if node.op_type == "Dropout" and len(inputs) > 2 else None
    if training is not None and (not isinstance(training, np.ndarray) or training.any()):
        raise t.fail("Dropout in training mode is not supported (export in eval mode)")
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
    rank, axis = len(in_shape), int(t.attrs().get("axis", 1))
    if not -rank <= axis <= rank:
        raise t.fail(f"Flatten axis {axis} is out of range for {rank} axes")
    axis = axis + rank if axis < 0 else axis  # [-r, r]: -1 keeps the last axis apart
    outer = int(np.prod(in_shape[:axis]))
    return [_reshape_to(t, x, [outer, int(np.prod(in_shape[axis:]))])]


@handles("Unsqueeze")
def unsqueeze(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    x = t.ref(inputs[0])
    axes = _axes(t, inputs, 1) or []
    out = list(t.type_of(x).shape)
    rank = len(out) + len(axes)
    for axis in sorted(_axis_set(t, axes, rank)):
        out.insert(axis, 1)
    return [_reshape_to(t, x, out)]


@handles("Squeeze")
def squeeze(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    x = t.ref(inputs[0])
    in_shape = t.type_of(x).shape
    axes = _axes(t, inputs, 1)
    drop = set(_axis_set(t, axes, len(in_shape))) if axes is not None else None
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


@handles("Tile")
def tile(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    """Tile as reshape + expand + reshape: an axis of size d > 1 repeated r times gets a new
    axis of size 1 in front (broadcast to r), then the two merge into r * d, which repeats
    the whole axis; axes of size 1 broadcast directly (repeat_interleave's legacy export)."""
    x = t.ref(inputs[0])
    in_shape = t.type_of(x).shape
    if len(inputs) < 2 or inputs[1] is None:
        raise t.fail("Tile needs its repeats input")
    repeats = _ints(t, inputs[1], "Tile repeats")
    if len(repeats) != len(in_shape):
        raise t.fail(
            f"Tile repeats {repeats} needs one entry per axis of its input {list(in_shape)}"
        )
    if any(r < 1 for r in repeats):
        raise t.fail(f"Tile repeats {repeats} must be >= 1 (cimc has no empty tensors)")
    split: list[int] = []
    wide: list[int] = []
    for d, r in zip(in_shape, repeats, strict=True):
        split += [1, d] if d > 1 and r > 1 else [d]
        wide += [r, d] if d > 1 and r > 1 else [d * r]
    out = [d * r for d, r in zip(in_shape, repeats, strict=True)]
    element_count(out, "Tile's output", t.where)
    if out == list(in_shape):
        return [x]
    y = x if split == list(in_shape) else t.emit(ops.Reshape(tuple(split)), [x], "split")
    y = t.emit(ops.Expand(tuple(wide)), [y], "tile")
    return [_reshape_to(t, y, out)]


@handles("Slice")
def slice_(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    x = t.ref(inputs[0])
    in_shape = t.type_of(x).shape
    starts = _ints(t, inputs[1], "Slice starts")
    ends = _ints(t, inputs[2], "Slice ends")
    axes = _axes(t, inputs, 3) or list(range(len(starts)))
    steps = _ints(t, inputs[4], "Slice steps") if len(inputs) > 4 and inputs[4] is not None else []
    steps = steps or [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise t.fail(
            f"Slice starts {starts}, ends {ends}, axes {axes} and steps {steps} differ in length"
        )
    axes = _axis_set(t, axes, len(in_shape))
    for k, (start, end, axis, step) in enumerate(zip(starts, ends, axes, steps, strict=True)):
        if step < 1:
            raise t.fail(f"Slice with step {step} is not supported (only forward slices)")
        dim = in_shape[axis]
        lo, hi, _ = slice(start, end, step).indices(dim)
        if (lo, max(lo, hi), step) != (0, dim, 1):
            x = t.emit(ops.Slice(axis, lo, max(lo, hi), step), [x], f"s{k}")
    return [x]


@handles("Split")
def split(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    x = t.ref(inputs[0])
    attrs = t.attrs()
    in_shape = t.type_of(x).shape
    axis = t.axis(int(attrs.get("axis", 0)), len(in_shape))
    if len(inputs) > 1 and inputs[1] is not None:
        sizes = _ints(t, inputs[1], "Split sizes")
    elif "split" in attrs:
        sizes = [int(s) for s in attrs["split"]]
    else:
        count = max(int(attrs.get("num_outputs", len(node.output))), 1)
        chunk = -(-in_shape[axis] // count)
        sizes = [min(chunk, in_shape[axis] - k * chunk) for k in range(count)]
    if any(n < 0 for n in sizes) or sum(sizes) != in_shape[axis] or len(sizes) < len(node.output):
        raise t.fail(f"Split sizes {sizes} do not cut axis {axis} of {list(in_shape)} into "
                     f"{len(node.output)} parts")  # fmt: skip
    outputs: list[Value] = []
    start = 0
    for k, n in enumerate(sizes):
        if n == 0:  # an empty part (RotaryEmbedding's unrotated rest when it rotates all)
            shape = tuple(0 if a == axis else d for a, d in enumerate(in_shape))
            outputs.append(np.zeros(shape, t.type_of(x).dtype.numpy))
        else:
            outputs.append(t.emit(ops.Slice(axis, start, start + n, 1), [x], f"part{k}"))
        start += n
    return outputs


@handles("Concat")
def concat(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    like = next(v for v in inputs if isinstance(v, Ref))
    # empty operands add nothing (their other axes still have to agree)
    kept = [v for v in inputs if v is not None and 0 not in t.type_of(v).shape]
    refs = [t.ref(v, like) for v in kept or [like]]
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
    """A constant read at run-time indices: an embedding lookup (table_lookup.py)."""
    axis = int(t.attrs().get("axis", 0))
    if node.op_type == "Gather" and table.ndim == 2 and axis in (0, -2):
        return t.emit(ops.Embedding(), [ids, table])
    if node.op_type == "GatherND" or table.ndim == 0:
        raise t.fail(
            f"{node.op_type} of a constant at run-time indices is not supported; "
            "use Gather or GatherElements"
        )
    axis = t.axis(axis, table.ndim)
    shape = t.type_of(ids).shape
    if node.op_type == "GatherElements":
        if len(shape) != table.ndim:
            raise t.fail("GatherElements indices must have the rank of the data")
        plan = lookup_of("GatherElements", table, axis, shape)
    else:
        plan = lookup_of("Gather", table, axis, shape)
    rows = ids
    if t.type_of(rows).dtype != DType.I64:
        rows = t.emit(ops.Cast(DType.I64), [rows], "i64")
    if plan.stride != 1:
        rows = t.emit(ops.Mul(), [rows, np.array(plan.stride, np.int64)], "rows")
    if plan.offset is not None:
        rows = t.emit(ops.Add(), [rows, plan.offset], "offset")
    y = t.emit(ops.Embedding(), [rows, plan.table], "lookup")
    if plan.perm is None:
        return t.emit(ops.Reshape(plan.out_shape), [y])
    view = t.emit(ops.Reshape(plan.view_shape), [y], "view")
    return t.emit(ops.Transpose(plan.perm), [view])
