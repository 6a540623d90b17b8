"""Sliding-window ops: convolution, pooling, and the im2col that lowers both to matmuls.

Layout is ONNX's and PyTorch's: x[B, C, *S] with one or two spatial axes S (Conv1d,
Conv2d), channels first. Every window op carries the same geometry per spatial axis:
`kernel`, `strides`, `dilations` and `pads` (ONNX order: the begin pads of every axis,
then the end pads). Output extent per axis: floor((S + begin + end - ((k-1)*d + 1)) / s) + 1.

`conv` and `pool` are what importers produce; the `conv-to-matmul` pass rewrites them into
`im2col` (pure data movement) and ops that already have integer recipes: a `linear` over
the window columns (weight-stationary on the macros), a reduction over windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cimc.ir.op_base import Op, OpTypeError, expect, expect_float, register_op
from cimc.ir.types import TensorType

SPATIAL_RANKS = (1, 2)
POOL_KINDS = ("max", "avg")


@dataclass(frozen=True)
class Window:
    """The geometry of a sliding window over the spatial axes of x[B, C, *S]."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[int, ...]
    dilations: tuple[int, ...]

    @property
    def rank(self) -> int:
        return len(self.kernel)

    def begin(self, axis: int) -> int:
        return self.pads[axis]

    def end(self, axis: int) -> int:
        return self.pads[self.rank + axis]

    def extent(self, axis: int) -> int:
        """The span one window covers along `axis` (dilation included)."""
        return (self.kernel[axis] - 1) * self.dilations[axis] + 1

    def check(self, spatial: tuple[int, ...], what: str) -> None:
        r = self.rank
        expect(r in SPATIAL_RANKS, f"{what} has {r} spatial axes; cimc takes 1 or 2")
        expect(len(spatial) == r, f"{what} window of rank {r} on {len(spatial)} spatial axes")
        lists = ((self.strides, r, "strides"), (self.dilations, r, "dilations"))
        for values, n, name in (*lists, (self.pads, 2 * r, "pads")):
            expect(len(values) == n, f"{what} {name} must have {n} entries, got {list(values)}")
        expect(all(k >= 1 for k in self.kernel), f"{what} kernel {list(self.kernel)} is empty")
        expect(all(s >= 1 for s in self.strides), f"{what} strides must be >= 1")
        expect(all(d >= 1 for d in self.dilations), f"{what} dilations must be >= 1")
        expect(all(p >= 0 for p in self.pads), f"{what} pads must be >= 0")
        for a in range(r):
            expect(
                spatial[a] + self.begin(a) + self.end(a) >= self.extent(a),
                f"{what} window of extent {self.extent(a)} does not fit axis {a} "
                f"of length {spatial[a]} padded by {self.begin(a)}+{self.end(a)}",
            )

    def out_shape(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(
            (spatial[a] + self.begin(a) + self.end(a) - self.extent(a)) // self.strides[a] + 1
            for a in range(self.rank)
        )

    def windows_overlap_input(self, spatial: tuple[int, ...]) -> bool:
        """Whether every window holds at least one element of the unpadded input."""
        for a, size in enumerate(spatial):
            for o in range(self.out_shape(spatial)[a]):
                start = o * self.strides[a] - self.begin(a)
                taps = (start + j * self.dilations[a] for j in range(self.kernel[a]))
                if not any(0 <= t < size for t in taps):
                    return False
        return True


def defaults(
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    pads: tuple[int, ...],
    dilations: tuple[int, ...],
) -> Window:
    """A window with empty attributes filled with ONNX's defaults (1s and 0s)."""
    r = len(kernel)
    return Window(kernel, strides or (1,) * r, pads or (0,) * (2 * r), dilations or (1,) * r)


def _x_type(x: TensorType, what: str) -> tuple[int, ...]:
    expect(x.rank - 2 in SPATIAL_RANKS, f"{what} input must be [B, C, L] or [B, C, H, W], got {x}")
    return x.shape[2:]


@register_op
@dataclass(frozen=True)
class Conv(Op):
    """y[B, Cout, *O] = sum over Cin/groups and the window of x * w (+ b[Cout]).

    x[B, Cin, *S], w[Cout, Cin/groups, *kernel] constant, b[Cout] constant. Zero padding.
    """

    NAME = "conv"
    MIN_INPUTS = 2
    MAX_INPUTS = 3
    CONSTANT_OPERANDS = (1, 2)
    strides: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    groups: int = 1

    def window(self, kernel: tuple[int, ...]) -> Window:
        """The geometry for a weight of spatial shape `kernel` (the weight's last axes)."""
        return defaults(kernel, self.strides, self.pads, self.dilations)

    def normalize(self, inputs: tuple[TensorType, ...]) -> Op:
        if inputs[1].rank < 3:
            return self
        win = self.window(inputs[1].shape[2:])
        return Conv(win.strides, win.pads, win.dilations, self.groups)

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        x, w = inputs[0], inputs[1]
        for t, what in zip(inputs, ("input", "weight", "bias"), strict=False):
            expect_float(t, f"conv {what}")
        spatial = _x_type(x, "conv")
        expect(w.rank == x.rank, f"conv weight {w} must be [Cout, Cin/groups, *kernel] for {x}")
        cout, cin_g, g = w.shape[0], w.shape[1], self.groups
        expect(
            g >= 1 and x.shape[1] % g == 0 and cout % g == 0,
            f"conv groups={g} must divide Cin={x.shape[1]} and Cout={cout}",
        )
        expect(cin_g * g == x.shape[1], f"conv weight {w} has Cin/groups={cin_g}, input {x}")
        if len(inputs) == 3:
            expect(inputs[2].shape == (cout,), f"conv bias must be [{cout}], got {inputs[2]}")
        win = self.window(w.shape[2:])
        win.check(spatial, "conv")
        return TensorType((x.shape[0], cout, *win.out_shape(spatial)), x.dtype)


@register_op
@dataclass(frozen=True)
class Pool(Op):
    """Max or average over each window, per channel: y[B, C, *O].

    Max pooling pads with -inf (padding never wins); average pooling divides by the
    window size (`count_include_pad`) or by the number of input elements it covers.
    """

    NAME = "pool"
    MIN_INPUTS = MAX_INPUTS = 1
    kind: str
    kernel: tuple[int, ...]
    strides: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    count_include_pad: bool = False

    @property
    def window(self) -> Window:
        return defaults(self.kernel, self.strides, self.pads, self.dilations)

    def normalize(self, inputs: tuple[TensorType, ...]) -> Op:
        win = self.window
        return Pool(
            self.kind, win.kernel, win.strides, win.pads, win.dilations, self.count_include_pad
        )

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        x = inputs[0]
        expect_float(x, "pool input")
        expect(self.kind in POOL_KINDS, f"pool kind must be max or avg, got '{self.kind}'")
        spatial = _x_type(x, "pool")
        win = self.window
        win.check(spatial, "pool")
        if not win.windows_overlap_input(spatial):
            raise OpTypeError("pool has a window that covers padding only")
        return TensorType((*x.shape[:2], *win.out_shape(spatial)), x.dtype)


@register_op
@dataclass(frozen=True)
class Im2col(Op):
    """The windows of x[B, C, *S] as columns: y[B, C * prod(kernel), prod(O)] (torch's
    `unfold` layout: row c*K + kernel offset, column = output position, row-major).

    Out-of-bounds positions read `pad_value`: 0, or -inf (max pooling) which the quantizer
    turns into the lowest code of the operand's width.
    """

    NAME = "im2col"
    MIN_INPUTS = MAX_INPUTS = 1
    kernel: tuple[int, ...]
    strides: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    pad_value: float = 0.0

    @property
    def window(self) -> Window:
        return defaults(self.kernel, self.strides, self.pads, self.dilations)

    def normalize(self, inputs: tuple[TensorType, ...]) -> Op:
        win = self.window
        return Im2col(win.kernel, win.strides, win.pads, win.dilations, self.pad_value)

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        x = inputs[0]
        spatial = _x_type(x, "im2col")
        expect(x.dtype.is_numeric, f"im2col input must be numeric, got {x}")
        expect(
            self.pad_value == 0 or x.dtype.is_float or math.isfinite(self.pad_value),
            "im2col on integer codes needs a finite pad value",
        )
        win = self.window
        win.check(spatial, "im2col")
        rows = x.shape[1] * math.prod(win.kernel)
        return TensorType((x.shape[0], rows, math.prod(win.out_shape(spatial))), x.dtype)
