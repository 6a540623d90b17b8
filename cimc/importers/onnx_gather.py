"""Gathers with constant indices on run-time data, lowered to slice/reshape/transpose/expand.

Exporters build masks and position selections as GatherND/GatherElements/Gather with
index arrays that fold to constants once shapes are static. Running the op on
``arange(numel)`` gives the flat source position of every output element; when those
positions are an affine (strided) view of the input, the view is spelled with canonical
layout ops and checked on the arange before it is emitted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from cimc.importers.onnx_fold import evaluate
from cimc.importers.onnx_translate import Ref, Translator, Value
from cimc.ir import ops


@dataclass(frozen=True)
class AxisMap:
    """Output axis `out_axis` walks data axis `data_axis` with `step` (None: broadcast)."""

    out_axis: int
    data_axis: int | None
    step: int


def lower_index_op(t: Translator, node: onnx.NodeProto, x: Ref, inputs: list[Value | None]) -> Ref:
    """The output of `node` (a gather with constant indices on run-time `x`) as a view."""
    shape = t.type_of(x).shape
    source = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    arrays = [source] + [v if isinstance(v, np.ndarray) else None for v in inputs[1:]]
    flat = evaluate(node, arrays, t.opset)[0]
    plan = affine_plan(flat, shape)
    prefix: list[ops.Op] = []
    if plan is None:
        # Two output axes may walk one data axis (a flattened [B*S, 1] input): split
        # the data into one axis per stride and retry.
        split = _split_shape(flat, int(source.size))
        plan = affine_plan(flat, split) if split else None
        if plan is None:
            raise t.fail(f"{node.op_type} selects elements that are not a strided view")
        assert split is not None
        prefix, shape = [ops.Reshape(split)], split
    offset, axes = plan
    steps = prefix + _view_steps(shape, offset, axes, tuple(flat.shape))
    if not np.array_equal(_run_numpy(source, steps), flat):
        raise t.fail(f"{node.op_type} could not be expressed with slice/reshape/expand")
    for k, step in enumerate(steps):
        x = t.emit(step, [x], f"v{k}")
    return x


def affine_plan(flat: np.ndarray, shape: tuple[int, ...]) -> tuple[int, list[AxisMap]] | None:
    """Offset and per-output-axis data axis/step when `flat` is a strided view, else None."""
    if flat.size == 0:
        return None
    offset = int(flat.reshape(-1)[0])
    strides = [int(np.prod(shape[j + 1 :])) for j in range(len(shape))]
    coords = np.unravel_index(offset, shape) if shape else ()
    used: set[int] = set()
    axes: list[AxisMap] = []
    expected = np.full(flat.shape, offset, dtype=np.int64)
    for k, n in enumerate(flat.shape):
        unit = [0] * flat.ndim
        if n > 1:
            unit[k] = 1
        stride = int(flat[tuple(unit)]) - offset
        if stride == 0:
            axes.append(AxisMap(k, None, 0))
            continue
        match = _data_axis(stride, n, strides, shape, coords, used)
        if match is None:
            return None
        used.add(match[0])
        axes.append(AxisMap(k, match[0], match[1]))
        index_shape = [1] * flat.ndim
        index_shape[k] = n
        expected = expected + stride * np.arange(n, dtype=np.int64).reshape(index_shape)
    return (offset, axes) if np.array_equal(expected, flat) else None


def _split_shape(flat: np.ndarray, size: int) -> tuple[int, ...] | None:
    """A data shape whose row-major strides are exactly the distinct strides of `flat`."""
    offset = int(flat.reshape(-1)[0])
    strides = set()
    for k, n in enumerate(flat.shape):
        if n > 1:
            unit = [0] * flat.ndim
            unit[k] = 1
            strides.add(int(flat[tuple(unit)]) - offset)
    ordered = sorted((s for s in strides if s > 0), reverse=True)
    if not ordered or any(s <= 0 for s in strides - {0}):
        return None
    dims = [size, *ordered, 1]
    if any(a % b for a, b in zip(dims, dims[1:], strict=False)):
        return None
    return tuple(a // b for a, b in zip(dims, dims[1:], strict=False))


def _data_axis(
    stride: int,
    n: int,
    strides: list[int],
    shape: tuple[int, ...],
    coords: tuple,
    used: set[int],
) -> tuple[int, int] | None:
    """The data axis (and step) a stride walks: the largest one it is a multiple of."""
    for j in range(len(shape)):
        if j in used or shape[j] == 1 or stride <= 0 or stride % strides[j]:
            continue
        step = stride // strides[j]
        if int(coords[j]) + (n - 1) * step < shape[j]:
            return j, step
    return None


def _view_steps(
    shape: tuple[int, ...], offset: int, axes: list[AxisMap], out_shape: tuple[int, ...]
) -> list[ops.Op]:
    """slice each data axis, drop the unused ones, order them, add broadcast axes."""
    coords = [int(c) for c in np.unravel_index(offset, shape)] if shape else []
    walked = {a.data_axis: a for a in axes if a.data_axis is not None}
    steps: list[ops.Op] = []
    kept: list[int] = []
    for j, dim in enumerate(shape):
        start = coords[j]
        a = walked.get(j)
        stop = start + (out_shape[a.out_axis] - 1) * a.step + 1 if a else start + 1
        step = a.step if a else 1
        if (start, stop, step) != (0, dim, 1):
            steps.append(ops.Slice(j, start, stop, step))
        if a:
            kept.append(j)
    kept_sizes = [out_shape[walked[j].out_axis] for j in kept]
    steps.append(ops.Reshape(tuple(kept_sizes)))
    order = sorted(kept, key=lambda j: walked[j].out_axis)
    steps.append(ops.Transpose(tuple(kept.index(j) for j in order)))
    with_ones = tuple(n if axes[k].data_axis is not None else 1 for k, n in enumerate(out_shape))
    steps.append(ops.Reshape(with_ones))
    if with_ones != out_shape:
        steps.append(ops.Expand(out_shape))
    return steps


def _run_numpy(source: np.ndarray, steps: list[ops.Op]) -> np.ndarray:
    """The planned ops on numpy (a self-check of the plan before emitting it)."""
    x = source
    for step in steps:
        if isinstance(step, ops.Slice):
            index = [slice(None)] * x.ndim
            index[step.axis] = slice(step.start, step.stop, step.step)
            x = x[tuple(index)]
        elif isinstance(step, ops.Reshape):
            x = x.reshape(step.shape)
        elif isinstance(step, ops.Transpose):
            x = x.transpose(step.perm)
        elif isinstance(step, ops.Expand):
            x = np.broadcast_to(x, step.shape)
    return x
