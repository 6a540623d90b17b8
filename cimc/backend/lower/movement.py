"""Data movement between value regions: transpose, slice, concat, gather, expand, cast.

Values are row-major regions (cimc/backend/builder/values.py), so every movement op is a set of
2-D strided copies: a `dma` moves a [rows x cols] block whose rows sit `stride` elements
apart at either end. Only two cases need the vector unit: a transpose that moves the last
axis (`transpose` in the scratchpad), and a broadcast (`sel D, 1, A, 0` expands a 1xC or
Rx1 operand). Copies are spread round robin over the builder's cores; the builder orders
them against other cores' accesses with barriers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import replace

from cimc.backend.builder.alloc import chunks
from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.lower.common import SLACK, sp_too_small
from cimc.machine.program import View


def strides(shape: Sequence[int]) -> tuple[int, ...]:
    """Row-major element strides of a shape."""
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


def elem_view(base: View, offset: int, rows: int, cols: int, stride: int | None = None) -> View:
    """A [rows x cols] view `offset` elements into `base` (a contiguous region)."""
    stride = cols if stride is None or rows == 1 else stride
    delta = offset * base.elem_bytes
    symbolic = base.symbol is not None
    return replace(
        base,
        addr=base.addr + delta,
        rows=rows,
        cols=cols,
        stride=stride,
        offset=base.offset + delta if symbolic else 0,
    )


class _Cores:
    """Round-robin core choice for independent copies (deterministic)."""

    def __init__(self, b: ProgramBuilder) -> None:
        self.cores = b.cores
        self.k = 0

    def next(self) -> int:
        core = self.cores[self.k % len(self.cores)]
        self.k += 1
        return core


def copy_view(b: ProgramBuilder, src: View, dst: View, core: int | None = None) -> None:
    b.emit(b.cores[0] if core is None else core, "dma", dst, src)


def _sp_rows(b: ProgramBuilder, core: int, bytes_per_row: int) -> int:
    free = b.sp_largest_free(core) - 4 * SLACK
    rows = free // max(bytes_per_row, 1)
    if rows < 1:
        raise sp_too_small(b, "one row of this copy", bytes_per_row - free)
    return rows


# ---------------------------------------------------------------- transpose


def transpose(
    b: ProgramBuilder, src: View, shape: tuple[int, ...], perm: Sequence[int], dst: View
) -> None:
    """dst = src (of `shape`) with axes permuted by `perm`."""
    n = len(shape)
    if perm[-1] == n - 1:
        _transpose_rows(b, src, shape, perm, dst)
    else:
        _transpose_last(b, src, shape, perm, dst)


def _transpose_rows(
    b: ProgramBuilder, src: View, shape: tuple[int, ...], perm: Sequence[int], dst: View
) -> None:
    """The last axis stays: one strided dma per index of the outer output axes."""
    out = tuple(shape[p] for p in perm)
    s_str, d_str = strides(shape), strides(out)
    rows, cols = (out[-2], out[-1]) if len(out) > 1 else (1, out[-1])
    src_stride = s_str[perm[-2]] if len(out) > 1 else cols
    cores = _Cores(b)
    for idx in itertools.product(*(range(d) for d in out[:-2])):
        s0 = sum(i * s_str[perm[a]] for a, i in enumerate(idx))
        d0 = sum(i * d_str[a] for a, i in enumerate(idx))
        b.emit(
            cores.next(),
            "dma",
            elem_view(dst, d0, rows, cols),
            elem_view(src, s0, rows, cols, src_stride),
        )


def _transpose_last(
    b: ProgramBuilder, src: View, shape: tuple[int, ...], perm: Sequence[int], dst: View
) -> None:
    """The last axis moves: [P x L] blocks through the scratchpad's `transpose`."""
    n = len(shape)
    out = tuple(shape[p] for p in perm)
    s_str, d_str = strides(shape), strides(out)
    p, q = perm[-1], list(perm).index(n - 1)
    big, length = shape[p], shape[-1]
    others = [a for a in range(n - 1) if a != q]
    cores = _Cores(b)
    for idx in itertools.product(*(range(out[a]) for a in others)):
        s0 = sum(i * s_str[perm[a]] for a, i in zip(others, idx, strict=True))
        d0 = sum(i * d_str[a] for a, i in zip(others, idx, strict=True))
        core = cores.next()
        step = _sp_rows(b, core, 2 * length * src.elem_bytes)
        for r0, r1 in chunks(big, step):
            with b.scratch(core) as sc:
                a = sc(src.dtype, r1 - r0, length)
                t = sc(src.dtype, length, r1 - r0)
                b.emit(
                    core, "dma", a, elem_view(src, s0 + r0 * s_str[p], r1 - r0, length, s_str[p])
                )
                b.emit(core, "transpose", t, a)
                b.emit(core, "dma", elem_view(dst, d0 + r0, length, r1 - r0, d_str[q]), t)


# ---------------------------------------------------------------- slice, gather, concat


def _outer_inner(shape: tuple[int, ...], axis: int) -> tuple[int, int, int]:
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :])


def slice_axis(
    b: ProgramBuilder,
    src: View,
    shape: tuple[int, ...],
    axis: int,
    start: int,
    stop: int,
    step: int,
    dst: View,
) -> None:
    """dst = src[..., start:stop:step, ...] along `axis`."""
    outer, dim, inner = _outer_inner(shape, axis)
    count = len(range(start, stop, step))
    if step == 1:
        b.emit(
            b.cores[0],
            "dma",
            elem_view(dst, 0, outer, count * inner),
            elem_view(src, start * inner, outer, count * inner, dim * inner),
        )
        return
    cores = _Cores(b)
    for o in range(outer):
        b.emit(
            cores.next(),
            "dma",
            elem_view(dst, o * count * inner, count, inner),
            elem_view(src, (o * dim + start) * inner, count, inner, step * inner),
        )


def concat(
    b: ProgramBuilder,
    srcs: Sequence[tuple[View, tuple[int, ...]]],
    axis: int,
    dst: View,
    out_shape: tuple[int, ...],
) -> None:
    """dst = concatenation of the sources along `axis`: one strided dma per source."""
    outer, total, inner = _outer_inner(out_shape, axis)
    at, cores = 0, _Cores(b)
    for view, shape in srcs:
        n = shape[axis]
        b.emit(
            cores.next(),
            "dma",
            elem_view(dst, at * inner, outer, n * inner, total * inner),
            elem_view(view, 0, outer, n * inner),
        )
        at += n


# ---------------------------------------------------------------- broadcast (expand)


def materialize(
    b: ProgramBuilder, src: View, s: tuple[int, ...], dst: View, t: tuple[int, ...]
) -> None:
    """dst (shape t) = src (shape s, same rank, numpy-broadcastable to t)."""
    if s == t:
        copy_view(b, src, elem_view(dst, 0, src.rows, src.cols))
        return
    if s[-1] != t[-1]:  # the last axis repeats: expand the leading axes first, then sel
        lead = (*t[:-1], 1)
        col = src
        if s != lead:
            col = b.region(None, src.dtype, math.prod(lead), 1)
            materialize(b, src, s, col, lead)
        _repeat(b, _Cores(b).next(), elem_view(col, 0, math.prod(lead), 1), dst)
        return
    k = next(a for a in range(len(t) + 1) if s[a:] == t[a:])
    inner, reps = math.prod(t[k:]), t[k - 1]
    s_str, d_str = strides(s), strides(t)
    cores = _Cores(b)
    for idx in itertools.product(*(range(d) for d in t[: k - 1])):
        s0 = sum(i * s_str[a] for a, i in enumerate(idx) if s[a] != 1)
        d0 = sum(i * d_str[a] for a, i in enumerate(idx))
        _repeat(b, cores.next(), elem_view(src, s0, 1, inner), elem_view(dst, d0, reps, inner))


def _repeat(b: ProgramBuilder, core: int, src: View, dst: View) -> None:
    """dst[R x C] = src broadcast (src 1xC or Rx1) via the scratchpad's `sel`."""
    eb = src.elem_bytes
    per_row = (dst.cols + (src.cols if src.rows > 1 else 0)) * eb
    step = _sp_rows(b, core, per_row + src.cols * eb)
    for r0, r1 in chunks(dst.rows, step):
        with b.scratch(core) as sc:
            part = elem_view(src, r0 * src.stride, r1 - r0, 1, src.stride) if src.rows > 1 else src
            a = sc(src.dtype, part.rows, part.cols)
            out = sc(dst.dtype, r1 - r0, dst.cols)
            b.emit(core, "dma", a, part)
            b.emit(core, "sel", out, 1, a, 0)
            b.emit(core, "dma", elem_view(dst, r0 * dst.stride, r1 - r0, dst.cols, dst.stride), out)
