"""Lowering of `im2col`: the windows of x[B, C, *S] as rows of y[B, C*k, L], by DMAs.

Why DMAs and no vector work: with x row-major, the taps of one kernel offset (c, i, j)
over all output positions form a strided 2-D block of x (rows oh at stride s_h*Wp,
columns ow at stride s_w), and their destination is one contiguous row of y. So a stride-1
window is one `dma` per (b, c, i, j); a wider column stride needs a column view
(`[n x 1/stride]`) per output row or column, whichever axis is shorter. Padding first
copies x into a padded region (a fresh `.region`, zero at start) whose border holds the
pad value; the copies then read in-bounds only. DMAs go round robin over the cores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cimc.backend.builder.alloc import chunks
from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.lower.common import SLACK, sp_too_small
from cimc.backend.lower.movement import elem_view
from cimc.errors import CimcError
from cimc.ir.ops_conv import Window
from cimc.machine.program import View


@dataclass(frozen=True)
class Planes:
    """x as B*C planes of [h x w] (1-D inputs are planes of one row), row-major."""

    view: View
    count: int
    h: int
    w: int

    def at(self, plane: int, row: int, col: int, rows: int, cols: int, stride: int) -> View:
        offset = (plane * self.h + row) * self.w + col
        return elem_view(self.view, offset, rows, cols, stride)


def lower_im2col(
    b: ProgramBuilder, x: View, shape: tuple[int, ...], win: Window, pad_value: int, y: View
) -> None:
    """y[B*C*k x L] (row-major [B, C*k, L]) = the windows of x of `shape` [B, C, *S]."""
    spatial = shape[2:] if len(shape) == 4 else (1, *shape[2:])
    geo = _two_d(win)
    src = Planes(x, shape[0] * shape[1], *spatial)
    oh, ow = geo.out_shape((src.h, src.w))
    if any(geo.pads):
        src = _padded(b, src, geo, pad_value)
    kk = math.prod(geo.kernel)
    if y.rows * y.cols != src.count * kk * oh * ow:
        raise CimcError(f"im2col output {y.rows}x{y.cols} does not match its input", b.loc)
    core = _RoundRobin(b)
    (kh, kw), (sh, sw), (dh, dw) = geo.kernel, geo.strides, geo.dilations
    for plane in range(src.count):
        for i in range(kh):
            for j in range(kw):
                row = (plane * kk + i * kw + j) * oh * ow
                if sw == 1 or ow == 1:
                    dst = elem_view(y, row, oh, ow)
                    b.emit(core(), "dma", dst, src.at(plane, i * dh, j * dw, oh, ow, sh * src.w))
                elif oh <= ow:
                    for r in range(oh):
                        dst = elem_view(y, row + r * ow, ow, 1)
                        tap = src.at(plane, r * sh + i * dh, j * dw, ow, 1, sw)
                        b.emit(core(), "dma", dst, tap)
                else:
                    for c in range(ow):
                        dst = elem_view(y, row + c, oh, 1, ow)
                        tap = src.at(plane, i * dh, c * sw + j * dw, oh, 1, sh * src.w)
                        b.emit(core(), "dma", dst, tap)


def _two_d(win: Window) -> Window:
    """A 1-D window as a 2-D one over planes of one row."""
    if win.rank == 2:
        return win
    return Window(
        (1, *win.kernel), (1, *win.strides), (0, win.pads[0], 0, win.pads[1]), (1, *win.dilations)
    )


def _padded(b: ProgramBuilder, x: Planes, win: Window, pad_value: int) -> Planes:
    """x copied into the interior of a fresh padded region whose border is `pad_value`."""
    hp = x.h + win.begin(0) + win.end(0)
    wp = x.w + win.begin(1) + win.end(1)
    region = b.region(None, x.view.dtype, x.count * hp, wp)
    out = Planes(region, x.count, hp, wp)
    if pad_value != 0:  # regions start at zero: only another pad value is written
        _fill(b, region, pad_value)
    core = _RoundRobin(b)
    for plane in range(x.count):
        dst = out.at(plane, win.begin(0), win.begin(1), x.h, x.w, wp)
        b.emit(core(), "dma", dst, x.at(plane, 0, 0, x.h, x.w, x.w))
    return out


def _fill(b: ProgramBuilder, region: View, value: int) -> None:
    """Every element of `region` = value, from one filled scratchpad buffer."""
    core = b.cores[0]
    free = b.sp_largest_free(core) - 2 * SLACK
    rows = min(region.rows, free // (region.cols * region.elem_bytes))
    if rows < 1:
        raise sp_too_small(b, "one padded row of an im2col", region.cols * region.elem_bytes)
    with b.scratch(core) as sc:
        buf = sc(region.dtype, rows, region.cols)
        b.emit(core, "fill", buf, value)
        for r0, r1 in chunks(region.rows, rows):
            dst = elem_view(region, r0 * region.cols, r1 - r0, region.cols)
            b.emit(core, "dma", dst, elem_view(buf, 0, r1 - r0, region.cols))


class _RoundRobin:
    """The next core for an independent copy (deterministic)."""

    def __init__(self, b: ProgramBuilder) -> None:
        self.cores, self.k = b.cores, 0

    def __call__(self) -> int:
        self.k += 1
        return self.cores[(self.k - 1) % len(self.cores)]
