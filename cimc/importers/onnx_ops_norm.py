"""Handlers of LayerNormalization and RMSNormalization over any trailing axes.

Normalizing over axes [axis, ..., r-1] is normalizing the last axis of x viewed as
[..., prod(shape[axis:])] with scale and bias broadcast to those axes and flattened, so
every `axis` maps onto the canonical layer_norm / rms_norm (last axis), between two
reshapes. LayerNormalization's optional Mean and InvStdDev outputs are computed from
reductions (they exist only in the float graph: the quantizer has no use for them).
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from cimc.importers.onnx_translate import Ref, Translator, Value, handles
from cimc.ir import ops


def _flat_param(
    t: Translator, value: Value | None, tail: tuple[int, ...], fill: float, what: str
) -> Value:
    """A per-element parameter over the normalized axes, broadcast and flattened (a
    run-time one by an expand and a reshape: the float graph takes it, the quantizer not)."""
    if value is None:
        return np.full(math.prod(tail), fill, np.float32)
    if isinstance(value, Ref):
        if t.type_of(value).shape == (math.prod(tail),) and len(tail) == 1:
            return value
        wide = t.emit(ops.Expand(tail), [value], f"{what}_expand")
        return t.emit(ops.Reshape((math.prod(tail),)), [wide], what)
    if not isinstance(value, np.ndarray):
        raise t.fail(f"the normalization {what} must be a constant")
    try:
        return np.broadcast_to(value.astype(np.float32), tail).reshape(-1).copy()
    except ValueError:
        raise t.fail(f"the {what} {list(value.shape)} does not broadcast to {list(tail)}") from None


def _normalized(
    t: Translator, node: onnx.NodeProto, inputs: list[Value | None], rms: bool
) -> tuple[Ref, Ref, int]:
    x = t.ref(inputs[0])
    shape = t.type_of(x).shape
    if not t.type_of(x).dtype.is_float:
        raise t.fail(f"{node.op_type} is supported on float tensors only")
    axis = t.axis(int(t.attrs().get("axis", -1)), len(shape))
    tail = shape[axis:]
    flat = (
        t.emit(ops.Reshape((*shape[:axis], math.prod(tail))), [x], "flat")
        if axis < len(shape) - 1
        else x
    )
    eps = float(t.attrs().get("epsilon", 1e-5))
    gamma = _flat_param(t, inputs[1], tail, 1.0, "scale")
    if rms:
        y = t.emit(ops.RmsNorm(eps), [flat, gamma], "norm" if flat is not x else "")
    else:
        bias = inputs[2] if len(inputs) > 2 else None
        beta = _flat_param(t, bias, tail, 0.0, "bias")
        y = t.emit(ops.LayerNorm(eps), [flat, gamma, beta], "norm" if flat is not x else "")
    if flat is not x:
        y = t.emit(ops.Reshape(shape), [y])
    return x, y, axis


@handles("LayerNormalization")
def layer_norm(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    x, y, axis = _normalized(t, node, inputs, rms=False)
    wanted = [bool(name) for name in node.output[1:]]
    if not any(wanted):
        return [y]
    axes = tuple(range(axis, t.type_of(x).rank))
    mean = t.emit(ops.ReduceMean(axes, True), [x], "mean")
    centered = t.emit(ops.Sub(), [x, mean], "centered")
    square = t.emit(ops.Mul(), [centered, centered], "square")
    var = t.emit(ops.ReduceMean(axes, True), [square], "var")
    eps = np.asarray(float(t.attrs().get("epsilon", 1e-5)), np.float32)
    inv = t.emit(ops.Rsqrt(), [t.emit(ops.Add(), [var, eps], "var_eps")], "inv_std")
    outputs: list[Value] = [y, mean, inv]
    return outputs[: 1 + len(wanted)]


@handles("RMSNormalization")
def rms_norm(t: Translator, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
    return [_normalized(t, node, inputs, rms=True)[1]]
