"""Gathers of a constant tensor by run-time indices, spelled as embedding lookups.

``torch.gather`` / ONNX ``GatherElements`` and ``Gather`` on a constant with run-time
indices read one table entry per output element (RoBERTa gathers its all-zero
``token_type_ids`` buffer by the run-time position ids). Both are an `embedding` of a
2-D table at a computed row: ``row = index * stride + offset``, where `offset` is a
constant of the index's shape walking the axes the gather does not index. Axes along
which the constant does not vary are dropped first, so an expanded buffer costs no
offset. The plan is importer-independent; each importer emits it with its own nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Lookup:
    """rows = index * stride (+ offset); y = table[rows] reshaped to `out_shape`."""

    table: np.ndarray  # [N, W]
    stride: int
    offset: np.ndarray | None  # int64, the index's shape; None when all zero
    out_shape: tuple[int, ...]
    perm: tuple[int, ...] | None = None  # applied after the reshape (Gather on axis > 0)
    view_shape: tuple[int, ...] = ()  # the reshape before `perm` (Gather only)


def gather_elements(data: np.ndarray, axis: int, index_shape: tuple[int, ...]) -> Lookup:
    """GatherElements / torch.gather: y[i] = data[i with axis `axis` replaced by index[i]].

    The index may be smaller than `data` on the other axes (torch.gather allows it)."""
    keep: list[slice | int] = []
    for k, n in enumerate(index_shape):
        keep.append(slice(None) if k == axis else slice(0, n))
    part = data[tuple(keep)]
    # axes along which the constant does not vary read one entry (offset 0 there)
    for k in range(part.ndim):
        if k != axis and part.shape[k] > 1 and np.all(part == part.take([0], axis=k)):
            part = part.take([0], axis=k)
    strides = [int(np.prod(part.shape[k + 1 :], dtype=np.int64)) for k in range(part.ndim)]
    offset = np.zeros(index_shape, np.int64)
    for k, n in enumerate(index_shape):
        if k != axis and part.shape[k] > 1:
            shape = [1] * len(index_shape)
            shape[k] = n
            offset = offset + (np.arange(n, dtype=np.int64) * strides[k]).reshape(shape)
    table = np.ascontiguousarray(part.reshape(-1, 1))
    return Lookup(table, strides[axis], offset if offset.any() else None, tuple(index_shape))


def gather(data: np.ndarray, axis: int, index_shape: tuple[int, ...]) -> Lookup:
    """ONNX Gather / torch.index_select: y = data.take(index, axis), shape
    data[:axis] + index + data[axis+1:]: rows of `data` with `axis` first."""
    moved = np.moveaxis(data, axis, 0)
    table = np.ascontiguousarray(moved.reshape(moved.shape[0], -1))
    rest = moved.shape[1:]
    view = (*index_shape, *rest)
    out = (*data.shape[:axis], *index_shape, *data.shape[axis + 1 :])
    perm = None
    if axis > 0:  # [index..., before..., after...] -> [before..., index..., after...]
        i, b = len(index_shape), axis
        order = list(range(i, i + b)) + list(range(i)) + list(range(i + b, len(view)))
        perm = tuple(order)
    return Lookup(table, 1, None, out, perm, view)


def lookup_of(kind: str, data: np.ndarray, axis: int, index_shape: tuple[int, ...]) -> Lookup:
    """The plan of a GatherElements (torch.gather) or a Gather (index_select)."""
    return (gather_elements if kind == "GatherElements" else gather)(data, axis, index_shape)


def reference(data: np.ndarray, lookup: Lookup, index: np.ndarray) -> np.ndarray:
    """What the emitted nodes compute, on numpy (tests check it against the op)."""
    rows = index.astype(np.int64) * lookup.stride
    if lookup.offset is not None:
        rows = rows + lookup.offset
    y = lookup.table[rows]
    if lookup.view_shape:
        y = y.reshape(lookup.view_shape)
        return y.transpose(lookup.perm) if lookup.perm else y.reshape(lookup.out_shape)
    return y.reshape(lookup.out_shape)
