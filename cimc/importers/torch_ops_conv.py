"""The aten op table, the CNN part: convolution, pooling, batch norm, hardtanh / clamp.

Inference batch norm becomes x * s + t with per-channel constants (s = gamma /
sqrt(var + eps), t = beta - mean * s), as the ONNX importer spells it, so the `idioms-conv`
pass folds it into the conv before it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.fx import Node as FxNode

from cimc.importers.torch_fx import Ref, to_numpy
from cimc.importers.torch_ops import bind, handles
from cimc.importers.torch_translate import Translator
from cimc.ir import DType
from cimc.ir.ops import Add, Clip, Conv, Mul, Pool, ReduceMean


def _ints(t: Translator, value: Any, rank: int) -> tuple[int, ...]:
    v = t.value(value)
    items = [int(v)] * rank if isinstance(v, int) else [int(i) for i in v]
    return tuple(items * rank if len(items) == 1 else items)


def _same_pads(kernel: tuple[int, ...], dilations: tuple[int, ...]) -> tuple[int, ...]:
    """padding="same" at stride 1: the extra pad goes at the end, as torch puts it."""
    total = [d * (k - 1) for k, d in zip(kernel, dilations, strict=True)]
    return (*(p // 2 for p in total), *(p - p // 2 for p in total))


@handles("aten.convolution.default", "aten.conv1d.default", "aten.conv2d.default",
         "aten.conv1d.padding", "aten.conv2d.padding")  # fmt: skip
def convolution(t: Translator, node: FxNode) -> Ref:
    a = bind(node)
    if a.get("transposed"):
        raise t.error("transposed convolution is not supported")
    if t.is_runtime(a["weight"]) or (a["bias"] is not None and t.is_runtime(a["bias"])):
        raise t.error("convolution needs a constant weight and bias")
    kernel = t.type_of(a["weight"]).shape[2:]
    rank = len(kernel)
    strides, dilations = _ints(t, a["stride"], rank), _ints(t, a["dilation"], rank)
    padding = t.value(a["padding"])
    if padding == "same":
        pads = _same_pads(kernel, dilations)
    elif padding == "valid":
        pads = (0,) * (2 * rank)
    else:
        half = _ints(t, a["padding"], rank)
        pads = (*half, *half)
    if any(p for p in t.value(a.get("output_padding") or [0])):
        raise t.error("convolution with output_padding is not supported")
    x = t.name(a["input"], DType.F32)
    operands = [x, t.name(a["weight"], DType.F32)]
    if a["bias"] is not None:
        operands.append(t.name(a["bias"], DType.F32))
    op = Conv(strides, pads, dilations, int(t.value(a["groups"])))
    return t.emit(op, operands)


def _pool(t: Translator, node: FxNode, kind: str) -> Ref:
    a = bind(node)
    x = t.name(a["self"], DType.F32)
    rank = t.b.type_of(x).rank - 2
    kernel = _ints(t, a["kernel_size"], rank)
    strides = _ints(t, a["stride"], rank) if t.value(a["stride"]) else kernel
    half = _ints(t, a["padding"], rank)
    dilations = _ints(t, a.get("dilation") or 1, rank)
    include = bool(a.get("count_include_pad", False))
    if a.get("divisor_override") is not None:
        raise t.error("avg_pool with divisor_override is not supported")
    op = Pool(kind, kernel, strides, (*half, *half), dilations, include)
    if a.get("ceil_mode") and _partial_window(op, t.b.type_of(x).shape[2:]):
        raise t.error("ceil_mode=True with a partial last window is not supported")
    return t.emit(op, [x])


def _partial_window(op: Pool, spatial: tuple[int, ...]) -> bool:
    """Whether ceil mode would add a window floor mode has not (then the sizes differ)."""
    win = op.window
    spans = (n + win.begin(i) + win.end(i) - win.extent(i) for i, n in enumerate(spatial))
    return any(span % s for span, s in zip(spans, win.strides, strict=True))


@handles("aten.max_pool1d.default", "aten.max_pool2d.default",
         "aten.max_pool2d_with_indices.default")  # fmt: skip
def max_pool(t: Translator, node: FxNode) -> Any:
    out = _pool(t, node, "max")
    return (out, None) if "indices" in str(node.target) else out


@handles("aten.avg_pool1d.default", "aten.avg_pool2d.default")
def avg_pool(t: Translator, node: FxNode) -> Ref:
    return _pool(t, node, "avg")


@handles("aten.adaptive_avg_pool2d.default", "aten._adaptive_avg_pool2d.default",
         "aten.adaptive_avg_pool1d.default")  # fmt: skip
def adaptive_avg_pool(t: Translator, node: FxNode) -> Ref:
    x = t.name(node.args[0], DType.F32)
    spatial = t.b.type_of(x).shape[2:]
    out = _ints(t, node.args[1], len(spatial))
    if all(o == 1 for o in out):
        return t.emit(ReduceMean(tuple(range(2, 2 + len(spatial))), True), [x])
    if any(n % o for n, o in zip(spatial, out, strict=True)):
        raise t.error(f"adaptive pooling of {list(spatial)} to {list(out)} has uneven windows")
    kernel = tuple(n // o for n, o in zip(spatial, out, strict=True))
    return t.emit(Pool("avg", kernel, kernel), [x])


@handles("aten._native_batch_norm_legit_no_training.default", "aten.batch_norm.default")
def batch_norm(t: Translator, node: FxNode) -> Any:
    a = bind(node)
    if a.get("training"):
        raise t.error("batch_norm in training mode is not supported: export in eval mode")
    x = t.name(a["input"], DType.F32)
    channels = t.b.type_of(x).shape[1]
    mean = _param(t, a["running_mean"], 0.0, channels)
    var = _param(t, a["running_var"], 1.0, channels)
    gamma = _param(t, a["weight"], 1.0, channels)
    beta = _param(t, a["bias"], 0.0, channels)
    scale = gamma / np.sqrt(var + float(t.value(a["eps"])))
    shape = (-1,) + (1,) * (t.b.type_of(x).rank - 2)
    s = t.b.constant(scale.astype(np.float32).reshape(shape), t.fresh("bn_scale"))
    b = t.b.constant((beta - mean * scale).astype(np.float32).reshape(shape), t.fresh("bn_shift"))
    out = t.emit(Add(), [t.emit(Mul(), [x, s], "scaled").name, b])
    return (out, None, None) if "native" in str(node.target) else out


def _param(t: Translator, arg: Any, fill: float, channels: int) -> np.ndarray:
    if arg is None:
        return np.full(channels, fill, np.float64)
    value = t.value(arg)
    if not isinstance(value, torch.Tensor):
        raise t.error("batch_norm needs constant statistics and parameters")
    return to_numpy(value, t.where).astype(np.float64).reshape(channels)


@handles("aten.hardtanh.default", "aten.clamp.default", "aten.relu6.default")
def clamp(t: Translator, node: FxNode) -> Ref:
    a = bind(node)
    if str(node.target) == "aten.relu6.default":
        lo, hi = 0.0, 6.0
    elif "min_val" in a:
        lo, hi = float(t.value(a["min_val"])), float(t.value(a["max_val"]))
    else:
        lo = -math.inf if a["min"] is None else float(t.value(a["min"]))
        hi = math.inf if a["max"] is None else float(t.value(a["max"]))
    x = t.name(a["self"], DType.F32)
    if t.b.type_of(x).dtype != DType.F32 or t.out_dtype() != DType.F32:
        raise t.error("clamp is supported on float tensors only")
    return t.emit(Clip(min(lo, hi), hi), [x])  # min > max: every output is max, as torch
