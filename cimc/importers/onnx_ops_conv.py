"""Handlers of the CNN ops: Conv, pooling, BatchNormalization, Clip.

BatchNormalization (inference) becomes x * s + t with per-channel constants
s = gamma / sqrt(var + eps) and t = beta - mean * s: the `idioms-conv` pass folds them into
a preceding conv, and elsewhere they are an ordinary multiply and add.
"""

from __future__ import annotations

import numpy as np
import onnx

from cimc.importers.onnx_translate import Ref, Translator, Value, handles
from cimc.ir import ops


def _pads(
    t: Translator,
    rank: int,
    spatial: tuple[int, ...],
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
) -> tuple[int, ...]:
    """Explicit pads from `pads` or `auto_pad` (SAME_UPPER / SAME_LOWER / VALID)."""
    attrs = t.attrs()
    auto = attrs.get("auto_pad", b"NOTSET")
    if auto in (b"NOTSET", b""):
        pads = tuple(int(p) for p in attrs.get("pads", [0] * (2 * rank)))
        if len(pads) != 2 * rank:
            raise t.fail(f"pads must have {2 * rank} entries, got {list(pads)}")
        return pads
    if auto == b"VALID":
        return (0,) * (2 * rank)
    if auto not in (b"SAME_UPPER", b"SAME_LOWER"):
        known = "NOTSET, SAME_UPPER, SAME_LOWER, VALID"
        raise t.fail(f"auto_pad {auto.decode()!r} is not one of {known}")
    begin, end = [], []
    for a in range(rank):
        out = -(-spatial[a] // strides[a])
        total = max(0, (out - 1) * strides[a] + (kernel[a] - 1) * dilations[a] + 1 - spatial[a])
        small, big = total // 2, total - total // 2
        begin.append(small if auto == b"SAME_UPPER" else big)
        end.append(big if auto == b"SAME_UPPER" else small)
    return (*begin, *end)


def _geometry(t: Translator, x: Ref, kernel: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    attrs, rank = t.attrs(), len(kernel)
    spatial = t.type_of(x).shape[2:]
    if len(spatial) != rank:
        raise t.fail(f"a kernel of rank {rank} on an input with {len(spatial)} spatial axes")
    strides = tuple(int(s) for s in attrs.get("strides", [1] * rank))
    dilations = tuple(int(d) for d in attrs.get("dilations", [1] * rank))
    return strides, _pads(t, rank, spatial, kernel, strides, dilations), dilations


@handles("Conv")
def conv(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    x, w = inputs[0], inputs[1]
    if not isinstance(x, Ref) or not isinstance(w, np.ndarray):
        raise t.fail("Conv is supported with a run-time input and a constant weight only")
    strides, pads, dilations = _geometry(t, x, tuple(w.shape[2:]))
    operands: list[Value] = [x, t.ref(w, x)]
    if len(inputs) > 2 and inputs[2] is not None:
        if not isinstance(inputs[2], np.ndarray):
            raise t.fail("Conv needs a constant bias")
        operands.append(t.ref(inputs[2], x))
    group = int(t.attrs().get("group", 1))
    return [t.emit(ops.Conv(strides, pads, dilations, group), operands)]


@handles("MaxPool", "AveragePool")
def pool(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    if len(node.output) > 1 and node.output[1]:
        raise t.fail("MaxPool's Indices output is not supported")
    attrs = t.attrs()
    x = t.ref(inputs[0])
    kernel = tuple(int(k) for k in attrs["kernel_shape"])
    strides, pads, dilations = _geometry(t, x, kernel)
    if int(attrs.get("storage_order", 0)):
        raise t.fail("MaxPool storage_order=1 only changes Indices, which cimc does not give")
    kind = "max" if node.op_type == "MaxPool" else "avg"
    include = bool(attrs.get("count_include_pad", 0))
    op = ops.Pool(kind, kernel, strides, pads, dilations, include)
    if int(attrs.get("ceil_mode", 0)):
        _check_ceil(t, op, t.type_of(x).shape[2:])
    return [t.emit(op, [x])]


def _check_ceil(t: Translator, op: ops.Pool, spatial: tuple[int, ...]) -> None:
    """ceil_mode is accepted where it gives the floor-mode size (no partial window)."""
    win = op.window
    for a, size in enumerate(spatial):
        span = size + win.begin(a) + win.end(a) - win.extent(a)
        if span % win.strides[a]:
            raise t.fail("ceil_mode=1 with a partial last window is not supported")


@handles("GlobalAveragePool", "GlobalMaxPool")
def global_pool(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    x = t.ref(inputs[0])
    rank = t.type_of(x).rank
    if rank < 3:
        raise t.fail(f"{node.op_type} needs an input [B, C, ...], got rank {rank}")
    axes = tuple(range(2, rank))
    op = ops.ReduceMean(axes, True) if "Average" in node.op_type else ops.ReduceMax(axes, True)
    return [t.emit(op, [x])]


@handles("BatchNormalization")
def batch_norm(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    if len([o for o in node.output if o]) > 1:
        raise t.fail("BatchNormalization in training mode (running statistics outputs)")
    if int(t.attrs().get("training_mode", 0)):
        raise t.fail("BatchNormalization in training mode is not supported: export in eval mode")
    params = inputs[1:5]
    if not all(isinstance(p, np.ndarray) for p in params):
        raise t.fail("BatchNormalization needs constant scale, bias, mean and variance")
    gamma, beta, mean, var = (np.asarray(p, np.float64) for p in params)  # type: ignore[arg-type]
    x = t.ref(inputs[0])
    rank = t.type_of(x).rank
    eps = float(t.attrs().get("epsilon", 1e-5))
    scale = gamma / np.sqrt(var + eps)
    shift = beta - mean * scale
    shape = (-1,) + (1,) * (rank - 2)
    s = scale.astype(np.float32).reshape(shape)
    b = shift.astype(np.float32).reshape(shape)
    scaled = t.emit(ops.Mul(), [x, s], "scale")
    return [t.emit(ops.Add(), [scaled, b])]


@handles("Clip")
def clip(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    x = t.ref(inputs[0])
    bounds = [float("-inf"), float("inf")]
    if t.opset < 11:
        attrs = t.attrs()
        bounds = [float(attrs.get("min", bounds[0])), float(attrs.get("max", bounds[1]))]
    for k, value in enumerate(inputs[1:3]):
        if value is None:
            continue
        if not isinstance(value, np.ndarray) or value.size != 1:
            raise t.fail("Clip needs constant scalar bounds")
        bounds[k] = float(value.reshape(()))
    if not t.type_of(x).dtype.is_float:
        raise t.fail("Clip is supported on float tensors only")
    lo, hi = bounds
    if lo > hi:  # ONNX: every output is max then (numpy clip gives hi)
        lo = hi
    return [t.emit(ops.Clip(lo, hi), [x])]
