"""Float kernels of the sliding-window ops (conv, pool, im2col), on torch's own ops.

Conv and pooling run torch's conv/pool kernels on an explicitly padded input (ONNX pads
may differ per side, torch's may not), so they do not share code with `im2col`: the
`conv-to-matmul` pass is checked against an independent computation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cimc.ir.ops_conv import Conv, Im2col, Pool, Window

_CONV = {1: F.conv1d, 2: F.conv2d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d}


def pad(x: torch.Tensor, win: Window, value: float) -> torch.Tensor:
    """x[B, C, *S] padded by the window's begin/end pads with `value` (any dtype)."""
    widths: list[int] = []
    for axis in reversed(range(win.rank)):  # torch's F.pad lists the last axis first
        widths += [win.begin(axis), win.end(axis)]
    if not any(widths):
        return x
    if x.dtype.is_floating_point:
        return F.pad(x, widths, value=value)
    out = torch.full(_padded_shape(x, win), int(value), dtype=x.dtype)
    inner = [slice(None), slice(None)]
    inner += [slice(win.begin(a), win.begin(a) + x.shape[2 + a]) for a in range(win.rank)]
    out[tuple(inner)] = x
    return out


def _padded_shape(x: torch.Tensor, win: Window) -> list[int]:
    spatial = [x.shape[2 + a] + win.begin(a) + win.end(a) for a in range(win.rank)]
    return [x.shape[0], x.shape[1], *spatial]


def conv(op: Conv, args: list[torch.Tensor]) -> torch.Tensor:
    x, w = args[0], args[1]
    win = op.window(tuple(w.shape[2:]))
    bias = args[2] if len(args) == 3 else None
    fn = _CONV[win.rank]
    return fn(pad(x, win, 0.0), w, bias, win.strides, 0, win.dilations, op.groups)


def pool(op: Pool, args: list[torch.Tensor]) -> torch.Tensor:
    x, win = args[0], op.window
    if op.kind == "max":
        fn = _MAX_POOL[win.rank]
        return fn(pad(x, win, -math.inf), win.kernel, win.strides, 0, win.dilations)
    if any(d != 1 for d in win.dilations):
        raise ValueError("average pooling with dilations is not supported")
    avg = _AVG_POOL[win.rank]
    total = avg(pad(x, win, 0.0), win.kernel, win.strides, 0)
    if op.count_include_pad:
        return total
    covered = avg(pad(torch.ones_like(x[:1, :1]), win, 0.0), win.kernel, win.strides, 0)
    return total / covered


def im2col(op: Im2col, args: list[torch.Tensor]) -> torch.Tensor:
    """torch's `unfold` layout, for any dtype (F.unfold takes floats only)."""
    x, win = args[0], op.window
    cols = pad(x, win, op.pad_value)
    for a in range(win.rank):
        cols = cols.unfold(2 + a, win.extent(a), win.strides[a])
    taps = [slice(None)] * cols.dim()
    for a in range(win.rank):
        taps[2 + win.rank + a] = slice(None, None, win.dilations[a])
    cols = cols[tuple(taps)]  # [B, C, *O, *kernel]
    r = win.rank
    order = [0, 1, *range(2 + r, 2 + 2 * r), *range(2, 2 + r)]  # [B, C, *kernel, *O]
    b, c = x.shape[0], x.shape[1]
    return cols.permute(order).reshape(b, c * math.prod(win.kernel), -1)
