"""Address allocation and view arithmetic for the program builder (cimc/backend/builder/asm.py).

Why first-fit with a free list: scratchpads are small (16 KiB on `tiny`), so a lowering
allocates its buffers, uses them and frees them; a pure bump allocator would run out after
a few ops. First fit with coalescing is simple, deterministic and reuses freed space.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cimc.errors import CimcError
from cimc.machine.program import DTYPE_BYTES, DType, View, dtype_range


def align_up(value: int, align: int) -> int:
    return -(-value // align) * align


@dataclass
class Allocator:
    """First-fit allocator over bytes [base, size) of one memory, with coalescing frees."""

    what: str
    size: int
    field: str  # the arch field sizing this memory, named when it is full
    base: int = 0
    align: int = 8

    def __post_init__(self) -> None:
        self._free: list[tuple[int, int]] = [(self.base, self.size)]  # sorted [start, end)
        self._used: dict[int, int] = {}
        self.high_water = self.base

    def alloc(self, nbytes: int, align: int | None = None) -> int:
        step = max(align or self.align, 1)
        need = max(nbytes, 1)
        for i, (start, end) in enumerate(self._free):
            addr = align_up(start, step)
            if addr + need <= end:
                pieces = [(start, addr)] if addr > start else []
                if addr + need < end:
                    pieces.append((addr + need, end))
                self._free[i : i + 1] = pieces
                self._used[addr] = need
                self.high_water = max(self.high_water, addr + need)
                return addr
        least = align_up(self.size + need - self.largest_free(), 8)  # grows the last block
        advice = f"raise arch field '{self.field}' to at least {least} bytes"
        raise CimcError(
            f"{self.what} is full: cannot place {nbytes} bytes (largest free block "
            f"{self.largest_free()} of {self.size - self.base}); {advice}",
            self.what,
        )

    def free(self, addr: int) -> None:
        if addr not in self._used:
            raise ValueError(f"{self.what}: double free or foreign address {addr:#x}")
        end = addr + self._used.pop(addr)
        self._free.append((addr, end))
        self._free.sort()
        merged: list[tuple[int, int]] = []
        for start, stop in self._free:
            if merged and merged[-1][1] == start:
                merged[-1] = (merged[-1][0], stop)
            else:
                merged.append((start, stop))
        self._free = merged

    def largest_free(self) -> int:
        return max((end - start for start, end in self._free), default=0)

    def reserve_top(self, nbytes: int) -> int:
        """Keep the last `nbytes` of a fresh memory for good (e.g. the sync-token byte);
        returns their address. Error messages still count the whole memory."""
        start, end = self._free[-1]
        if end != self.size or end - start < nbytes:
            raise ValueError(f"{self.what}: the top {nbytes} bytes are not free")
        self._free[-1:] = [(start, end - nbytes)] if end - nbytes > start else []
        self._used[end - nbytes] = nbytes
        return end - nbytes


# --------------------------------------------------------------------------- views


def sub(view: View, r0: int, r1: int, c0: int = 0, c1: int | None = None) -> View:
    """Rows r0:r1, columns c0:c1 of a view (a strided view; symbolic offsets follow)."""
    c1 = view.cols if c1 is None else c1
    if not (0 <= r0 < r1 <= view.rows and 0 <= c0 < c1 <= view.cols):
        raise ValueError(f"sub-view [{r0}:{r1},{c0}:{c1}] outside {view.rows}x{view.cols}")
    delta = (r0 * view.stride + c0) * view.elem_bytes
    return replace(
        view,
        addr=view.addr + delta,
        rows=r1 - r0,
        cols=c1 - c0,
        offset=view.offset + delta if view.symbol is not None else 0,
    )


def cols(view: View, c0: int, c1: int) -> View:
    return sub(view, 0, view.rows, c0, c1)


def rows(view: View, r0: int, r1: int) -> View:
    return sub(view, r0, r1)


def reshape(view: View, nrows: int, ncols: int) -> View:
    """Reinterpret a contiguous view as nrows x ncols (same elements, row-major)."""
    if view.stride != view.cols and view.rows > 1:
        raise ValueError("only contiguous views can be reshaped")
    if nrows * ncols != view.rows * view.cols:
        raise ValueError(f"cannot reshape {view.rows}x{view.cols} to {nrows}x{ncols}")
    return replace(view, rows=nrows, cols=ncols, stride=ncols)


def nbytes(dtype: DType, nrows: int, ncols: int) -> int:
    return DTYPE_BYTES[dtype] * nrows * ncols


def fit_dtype(values: np.ndarray | int, at_least: DType = "i8") -> DType:
    """Smallest dtype (not below `at_least`) holding every value."""
    arr = np.asarray(values, dtype=np.int64)
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    order: list[DType] = ["i8", "i16", "i32", "i64"]
    for dt in order[order.index(at_least) :]:
        dlo, dhi = dtype_range(dt)
        if dlo <= lo and hi <= dhi:
            return dt
    raise ValueError("values do not fit int64")


NP_OF: dict[str, type] = {"i8": np.int8, "i16": np.int16, "i32": np.int32, "i64": np.int64}


def split_even(total: int, parts: int) -> list[tuple[int, int]]:
    """[0, total) cut into at most `parts` contiguous, non-empty, near-equal ranges."""
    parts = max(1, min(parts, total))
    base, extra = divmod(total, parts)
    out, start = [], 0
    for i in range(parts):
        end = start + base + (1 if i < extra else 0)
        out.append((start, end))
        start = end
    return out


def chunks(total: int, size: int) -> list[tuple[int, int]]:
    """[0, total) in consecutive ranges of at most `size`."""
    size = max(1, size)
    return [(s, min(total, s + size)) for s in range(0, total, size)]
