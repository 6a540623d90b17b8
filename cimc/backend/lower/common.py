"""Pieces shared by the lowerings: requant operands, constants in sp, row chunking.

Conventions of every lowering (cimc/backend/lower/): operands and results are views in
shared memory (gb or dram) laid out row-major as 2-D [rows x cols]; scratchpad buffers are
allocated and freed inside the lowering; work is cut into row chunks that fit the
scratchpad and spread over the builder's cores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cimc.backend.builder.alloc import chunks, cols, fit_dtype, split_even, sub
from cimc.backend.builder.asm import ProgramBuilder, Scratch
from cimc.errors import CimcError
from cimc.machine.program import DTYPE_BYTES, DType, View
from cimc.quant.constants import Requant

SLACK = 64  # bytes of alignment slack counted per buffer when sizing chunks


@dataclass(frozen=True)
class ChanConst:
    """A per-channel operand: an immediate when every channel agrees, else a 1xN const."""

    imm: int | None
    const: View | None

    def block(self, sc: Scratch, b: ProgramBuilder, c0: int, c1: int) -> View | int:
        """The operand for channels c0:c1, loaded into the scratchpad when it is a const."""
        if self.imm is not None:
            return self.imm
        assert self.const is not None
        buf = sc(self.const.dtype, 1, c1 - c0)
        b.emit(sc.core, "dma", buf, cols(self.const, c0, c1))
        return buf


def chan_const(
    b: ProgramBuilder, name: str, values: np.ndarray, n: int, at_least: DType = "i8"
) -> ChanConst:
    arr = np.broadcast_to(np.asarray(values, np.int64).reshape(-1), (n,))
    if np.all(arr == arr[0]):
        return ChanConst(int(arr[0]), None)
    return ChanConst(None, b.const(name, arr.reshape(1, n), fit_dtype(arr, at_least)))


@dataclass(frozen=True)
class ReqConsts:
    mult: ChanConst
    shift: ChanConst
    lo: int
    hi: int


def req_consts(b: ProgramBuilder, name: str, rq: Requant, n: int) -> ReqConsts:
    """The multiplier and shift of a Requant as immediates or per-channel constants."""
    return ReqConsts(
        chan_const(b, f"{name}.m", rq.mult, n, "i32"),
        chan_const(b, f"{name}.s", rq.shift, n),
        rq.lo,
        rq.hi,
    )


def emit_req(
    b: ProgramBuilder, sc: Scratch, dst: View, src: View, rc: ReqConsts, c0: int = 0
) -> None:
    """dst = clamp(RSHR(src * M, s), lo, hi) for channels c0:c0+dst.cols."""
    c1 = c0 + dst.cols
    m = rc.mult.block(sc, b, c0, c1)
    s = rc.shift.block(sc, b, c0, c1)
    b.emit(sc.core, "req", dst, src, m, s, 0, rc.lo, rc.hi)


def load_const(b: ProgramBuilder, sc: Scratch, const: View) -> View:
    """A constant copied into the scratchpad (tables, per-channel vectors)."""
    buf = sc(const.dtype, const.rows, const.cols)
    b.emit(sc.core, "dma", buf, const)
    return buf


def sp_too_small(b: ProgramBuilder, what: str, short: int) -> CimcError:
    """The scratchpad lacks `short` bytes for `what`: name the arch field and the size.

    The arch alone cannot know this (it depends on the model's widths), so the check is
    here, when lowering; "at least" because other live buffers may still move."""
    have = b.arch.core.scratchpad_bytes
    least = -(-(have + max(short, 1)) // 8) * 8  # the field must be a multiple of 8
    return CimcError(
        f"scratchpad too small for {what}: arch field 'core.scratchpad_bytes' is {have} "
        f"bytes, this model needs at least {least}; raise it or pick a preset "
        "with a larger scratchpad",
        b.loc,
    )


def row_chunk(
    b: ProgramBuilder, cores: Sequence[int], bytes_per_row: int, fixed: int, nbufs: int
) -> int:
    """Rows per chunk so that `fixed` bytes plus `bytes_per_row` per row fit every core."""
    free = min(b.sp_largest_free(c) for c in cores) - fixed - SLACK * nbufs
    rows = free // max(bytes_per_row, 1)
    if rows < 1:
        what = f"one row ({bytes_per_row} bytes plus {fixed} fixed)"
        raise sp_too_small(b, what, bytes_per_row - free)
    return rows


def row_work(total: int, cores: Sequence[int], chunk: int) -> list[tuple[int, int, int]]:
    """(core, r0, r1) pieces: rows split evenly over cores, then into chunks."""
    out: list[tuple[int, int, int]] = []
    for core, (a, z) in zip(cores, split_even(total, len(cores)), strict=False):
        out.extend((core, a + s, a + e) for s, e in chunks(z - a, chunk))
    return out


def row_bytes(*cols_dtypes: tuple[int, DType]) -> int:
    return sum(c * DTYPE_BYTES[d] for c, d in cols_dtypes)


def check_shape(view: View, shape: tuple[int, int], what: str, loc: str | None) -> None:
    if view.shape != shape:
        raise CimcError(f"{what} must be {shape[0]}x{shape[1]}, got {view.rows}x{view.cols}", loc)


@dataclass(frozen=True)
class Heads:
    """A [batch, heads, seq, dim] tensor held as a 2-D view: token-major [batch*seq x
    heads*dim] (head h in columns h*dim:(h+1)*dim) or head-major [batch*heads*seq x dim].

    `capacity` (default seq) is the rows each sequence occupies: a KV cache holding up to
    `capacity` positions of which the first `seq` are valid. `offset`: the rows in use
    start there instead (one sequence's rows among the packed rows of a batch)."""

    view: View
    batch: int
    heads: int
    seq: int
    dim: int
    head_major: bool = False
    capacity: int = 0
    offset: int = 0

    def __post_init__(self) -> None:
        cap = self.capacity or self.seq
        object.__setattr__(self, "capacity", cap)
        want = (
            (self.batch * self.heads * cap, self.dim)
            if self.head_major
            else (self.batch * cap, self.heads * self.dim)
        )
        if self.view.shape != want or not 0 <= self.offset <= cap - self.seq or self.seq < 1:
            raise CimcError(
                f"a [{self.batch}, {self.heads}, {self.seq} of {cap}, {self.dim}] tensor needs "
                f"a {want[0]}x{want[1]} view, got {self.view.rows}x{self.view.cols}"
            )

    def head(self, bi: int, h: int) -> View:
        if self.head_major:
            r0 = (bi * self.heads + h) * self.capacity + self.offset
            return sub(self.view, r0, r0 + self.seq)
        r0 = bi * self.capacity + self.offset
        return sub(self.view, r0, r0 + self.seq, h * self.dim, (h + 1) * self.dim)
