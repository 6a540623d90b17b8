"""The aten op table, part 2: views, slicing, concatenation and constant-index indexing."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch
from torch.fx import Node as FxNode

from cimc.importers.torch_fx import Ref
from cimc.importers.torch_ops import bind, handles
from cimc.importers.torch_translate import Translator
from cimc.ir.ops import Concat, Expand, Gather, Reshape, Slice, Transpose


def ints(t: Translator, arg: Any) -> list[int]:
    """A (possibly symbolic, now bound) int list argument as plain ints."""
    value = t.value(arg)
    if isinstance(value, int | torch.SymInt):
        return [int(value)]
    return [int(v) for v in value]


@handles("aten.view.default", "aten._unsafe_view.default", "aten.reshape.default")
def view(t: Translator, node: FxNode) -> Ref:
    return t.emit(Reshape(tuple(ints(t, node.args[1]))), [t.name(node.args[0])])


def reshape_to(t: Translator, node: FxNode) -> Ref:
    """A view whose result shape is the exported one (unsqueeze, squeeze, flatten)."""
    x = t.name(node.args[0])
    return t.emit(Reshape(out_shape(t, node, x)), [x])


def out_shape(t: Translator, node: FxNode, x: str) -> tuple[int, ...]:
    """The node's result shape computed by torch on a stand-in for `x`."""
    stand_in = torch.zeros(t.b.shape(x))
    rest = [t.value(a) for a in node.args[1:]]
    return tuple(node.target(stand_in, *rest).shape)  # type: ignore[operator]


for _name in ("aten.unsqueeze.default", "aten.squeeze.dim", "aten.squeeze.dims",
              "aten.squeeze.default", "aten.flatten.using_ints"):  # fmt: skip
    handles(_name)(reshape_to)


@handles("aten.transpose.int")
def transpose(t: Translator, node: FxNode) -> Ref:
    x = t.name(node.args[0])
    rank = t.b.type_of(x).rank
    perm = list(range(rank))
    d0, d1 = (int(t.value(a)) % max(rank, 1) for a in node.args[1:3])
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return t.emit(Transpose(tuple(perm)), [x])


@handles("aten.permute.default")
def permute(t: Translator, node: FxNode) -> Ref:
    return t.emit(Transpose(tuple(ints(t, node.args[1]))), [t.name(node.args[0])])


@handles("aten.t.default", "aten.numpy_T.default")
def t_(t: Translator, node: FxNode) -> Ref:
    x = t.name(node.args[0])
    rank = t.b.type_of(x).rank
    return t.emit(Transpose(tuple(reversed(range(rank)))), [x])


@handles("aten.expand.default", "aten.expand_copy.default")
def expand(t: Translator, node: FxNode) -> Ref:
    x = t.name(node.args[0])
    shape = t.b.shape(x)
    size = ints(t, node.args[1])
    offset = len(size) - len(shape)
    target = [shape[k - offset] if d == -1 else d for k, d in enumerate(size)]
    return t.emit(Expand(tuple(target)), [x])


@handles("aten.repeat_interleave.self_int")
def repeat_interleave(t: Translator, node: FxNode) -> Ref:
    """x.repeat_interleave(r, dim) as unsqueeze + expand + reshape (how HF writes GQA)."""
    a = bind(node)
    x = t.name(a["self"])
    shape = list(t.b.shape(x))
    if a.get("dim") is None or not isinstance(t.value(a["repeats"]), int | torch.SymInt):
        raise t.error("repeat_interleave needs an int `repeats` and a `dim`; use expand")
    d, r = int(t.value(a["dim"])) % max(len(shape), 1), int(t.value(a["repeats"]))
    inner = (*shape[: d + 1], 1, *shape[d + 1 :])
    wide = t.emit(Reshape(inner), [x], "unsqueeze").name
    wide = t.emit(Expand((*shape[: d + 1], r, *shape[d + 1 :])), [wide], "expand").name
    return t.emit(Reshape((*shape[:d], shape[d] * r, *shape[d + 1 :])), [wide])


@handles("aten.slice.Tensor", "aten.slice_copy.Tensor")
def slice_(t: Translator, node: FxNode) -> Ref:
    a = bind(node)
    start, end = t.value(a["start"]), t.value(a["end"])
    op = Slice(
        axis=int(t.value(a["dim"])),
        start=0 if start is None else int(start),
        stop=sys.maxsize if end is None else min(int(end), sys.maxsize),
        step=int(t.value(a["step"])),
    )
    return t.emit(op, [t.name(a["self"])])


@handles("aten.narrow.default")
def narrow(t: Translator, node: FxNode) -> Ref:
    dim, start, length = (int(t.value(a)) for a in node.args[1:4])
    return t.emit(Slice(dim, start, start + length, 1), [t.name(node.args[0])])


@handles("aten.select.int")
def select(t: Translator, node: FxNode) -> Ref:
    dim, index = (int(t.value(a)) for a in node.args[1:3])
    return t.emit(Gather(axis=dim, index=index), [t.name(node.args[0])])


@handles("aten.cat.default")
def cat(t: Translator, node: FxNode) -> Ref:
    a = bind(node)
    dtype = t.out_dtype()
    parts = [t.name(p, dtype) for p in a["tensors"] if t.type_of(p).numel > 0]
    return t.emit(Concat(axis=int(t.value(a["dim"]))), parts)


@handles("aten.stack.default")
def stack(t: Translator, node: FxNode) -> Ref:
    a = bind(node)
    parts = [t.name(p, t.out_dtype()) for p in a["tensors"]]
    rank = t.b.type_of(parts[0]).rank + 1
    dim = int(t.value(a["dim"])) % rank
    shaped = []
    for k, p in enumerate(parts):
        shape = list(t.b.shape(p))
        shape.insert(dim, 1)
        shaped.append(t.emit(Reshape(tuple(shape)), [p], f"part{k}").name)
    return t.emit(Concat(axis=dim), shaped)


@handles("aten.split.Tensor", "aten.split_with_sizes.default", "aten.chunk.default")
def split(t: Translator, node: FxNode) -> tuple[Ref, ...]:
    x = t.name(node.args[0])
    dim = int(t.value(node.args[2])) if len(node.args) > 2 else 0
    dim %= t.b.type_of(x).rank
    total = t.b.shape(x)[dim]
    sizes = ints(t, node.args[1])
    if str(node.target) == "aten.chunk.default":  # n chunks of ceil(total / n)
        sizes = [-(-total // sizes[0])]
    if str(node.target) != "aten.split_with_sizes.default":
        sizes = [min(sizes[0], total - s) for s in range(0, total, sizes[0])]
    bounds = np.cumsum([0, *sizes])
    return tuple(
        t.emit(Slice(dim, int(lo), int(hi), 1), [x], f"part{k}")
        for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
    )


@handles("aten.unbind.int")
def unbind(t: Translator, node: FxNode) -> tuple[Ref, ...]:
    x = t.name(node.args[0])
    dim = int(t.value(node.args[1])) if len(node.args) > 1 else 0
    count = t.b.shape(x)[dim]
    return tuple(t.emit(Gather(dim, k), [x], f"part{k}") for k in range(count))


@handles("aten.index.Tensor")
def index(t: Translator, node: FxNode) -> Ref:
    """x[i0, i1, ...] with constant index tensors that are ranges along distinct axes:
    a slice per indexed axis, a transpose and a reshape (e.g. HF's mask[b, None, None, s])."""
    x = t.name(node.args[0])
    indices = t.value(node.args[1])
    if any(isinstance(i, Ref) for i in indices):
        raise t.error("indexing with run-time index tensors is not supported")
    dims = [d for d, i in enumerate(indices) if i is not None]
    arrays = {d: indices[d].numpy().astype(np.int64) for d in dims}
    bshape = np.broadcast_shapes(*(a.shape for a in arrays.values()))
    ranges = {d: index_range(arrays[d], t.b.shape(x)[d], bshape) for d in dims}
    axes = [r[0] for r in ranges.values() if r is not None and r[0] >= 0]
    if any(r is None for r in ranges.values()) or len(set(axes)) != len(axes):
        raise t.error("indexing is supported with ranges along distinct axes only")
    value = x
    for d in dims:
        _, start, stop, step = ranges[d]  # type: ignore[misc]
        value = t.emit(Slice(d, start, stop, step), [value], f"slice{d}").name
    adjacent = dims == list(range(dims[0], dims[-1] + 1))
    block = sorted(dims, key=lambda d: ranges[d][0])  # type: ignore[index]
    rest = [d for d in range(t.b.type_of(x).rank) if d not in dims]
    at = dims[0] if adjacent else 0
    perm = (*rest[:at], *block, *rest[at:])
    value = t.emit(Transpose(perm), [value], "perm").name
    shape = t.b.shape(x)
    result = (*(shape[d] for d in rest[:at]), *bshape, *(shape[d] for d in rest[at:]))
    return t.emit(Reshape(tuple(result)), [value])


def index_range(
    array: np.ndarray, dim: int, bshape: tuple[int, ...]
) -> tuple[int, int, int, int] | None:
    """(broadcast axis, start, stop, step) when `array` is an arithmetic range laid along
    one axis of the broadcast shape (axis -1 for a single index), else None."""
    array = array.reshape((1,) * (len(bshape) - array.ndim) + array.shape)
    axes = [ax for ax, n in enumerate(array.shape) if n > 1]
    if len(axes) > 1 or any(array.shape[ax] != bshape[ax] for ax in axes):
        return None
    values = array.reshape(-1) % dim
    axis = axes[0] if axes else -1
    step = int(values[1] - values[0]) if len(values) > 1 else 1
    if step < 1 or not np.array_equal(values, values[0] + step * np.arange(len(values))):
        return None
    return axis, int(values[0]), int(values[0] + step * (len(values) - 1) + 1), step


@handles("aten.slice_scatter.default")
def slice_scatter(t: Translator, node: FxNode) -> Ref:
    """x with x[start:end] along dim replaced by src (what functionalized x[a:b].op_() is):
    concat(x[:start], src, x[end:])."""
    a = bind(node)
    dtype = t.out_dtype()
    x, src = t.name(a["self"], dtype), t.name(a["src"], dtype)
    dim = int(t.value(a["dim"])) % t.b.type_of(x).rank
    if int(t.value(a["step"])) != 1:
        raise t.error("slice_scatter with a step other than 1 is not supported")
    size = t.b.shape(x)[dim]
    start, end = t.value(a["start"]), t.value(a["end"])
    lo, hi, _ = slice(start, end).indices(size)
    parts = [t.emit(Slice(dim, 0, lo, 1), [x], "head").name] if lo > 0 else []
    parts.append(src)
    if hi < size:
        parts.append(t.emit(Slice(dim, hi, size, 1), [x], "tail").name)
    return t.emit(Concat(axis=dim), parts)
