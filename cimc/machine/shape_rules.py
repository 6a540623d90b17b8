"""Shape rules of the opcode table: operand agreement, immediate ranges, `mN` sizing.

A rule takes the operands (kinds, spaces and dtypes already checked) and returns them with
bare `mN` windows sized from the other operands, or raises `OperandError` naming the operand.
"""

from __future__ import annotations

from dataclasses import replace

from cimc.machine.program import CoreSet, Imm, MacroRef, Operand, View, dtype_range

TAG_MAX = 65535
SHIFT_MAX = 63
I64_MIN, I64_MAX = dtype_range("i64")


class OperandError(Exception):
    """A shape/dtype/value rule failed; `index` is the offending operand (None: whole instr)."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.index = index


def _view(ops: tuple[Operand, ...], i: int) -> View:
    op = ops[i]
    assert isinstance(op, View)  # the parser checked kinds before calling the rule
    return op


def _shape(shape: tuple[int, int]) -> str:
    return f"{shape[0]}x{shape[1]}"


def _same_shape(ops: tuple[Operand, ...], i: int, j: int = 0) -> None:
    a, b = _view(ops, i), _view(ops, j)
    if a.shape != b.shape:
        raise OperandError(
            f"shape {_shape(a.shape)} does not match operand {j + 1}'s {_shape(b.shape)}", i
        )


def _same_dtype(ops: tuple[Operand, ...], i: int, j: int = 0) -> None:
    a, b = _view(ops, i), _view(ops, j)
    if a.dtype != b.dtype:
        raise OperandError(f"dtype {a.dtype} does not match operand {j + 1}'s {b.dtype}", i)


def _broadcast(ops: tuple[Operand, ...], i: int, j: int = 0) -> None:
    """Operand i is an immediate or a view broadcastable (1xC, Rx1, 1x1, RxC) to operand j."""
    op = ops[i]
    if isinstance(op, Imm):
        return
    rows, cols = _view(ops, j).shape
    r, c = _view(ops, i).shape
    if r not in (1, rows) or c not in (1, cols):
        raise OperandError(
            f"shape {r}x{c} does not broadcast to {rows}x{cols}; use 1x{cols}, {rows}x1 or "
            f"{rows}x{cols}",
            i,
        )


def _imm_in(ops: tuple[Operand, ...], i: int, lo: int, hi: int, what: str) -> None:
    op = ops[i]
    if isinstance(op, Imm) and not lo <= op.value <= hi:
        raise OperandError(f"{what} {op.value} is out of range [{lo}, {hi}]", i)


def rule_copy(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    _same_shape(ops, 1)
    _same_dtype(ops, 1)
    return ops


def rule_convert(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    _same_shape(ops, 1)
    return ops


def rule_transpose(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    dst, src = _view(ops, 0), _view(ops, 1)
    if dst.shape != (src.cols, src.rows):
        raise OperandError(
            f"destination {_shape(dst.shape)} must be the transpose of the source "
            f"{_shape(src.shape)}",
            0,
        )
    _same_dtype(ops, 1)
    return ops


def rule_sendrecv(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    _imm_in(ops, 0, 0, I64_MAX, "core id")
    _imm_in(ops, 2, 0, TAG_MAX, "tag")
    return ops


def rule_mcast(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    cores = ops[0]
    assert isinstance(cores, CoreSet)
    if not cores.cores:
        raise OperandError("names no core; list at least one, e.g. {1,2}", 0)
    ids = cores.cores
    if ids[0] < 0 or any(a >= b for a, b in zip(ids, ids[1:], strict=False)):
        raise OperandError("core ids must be >= 0, ascending, each once", 0)
    _imm_in(ops, 2, 0, TAG_MAX, "tag")
    return ops


def rule_none(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    return ops


def _sized_window(macro: MacroRef, shape: tuple[int, int], i: int) -> MacroRef:
    """Give a bare `mN` the implied extent; check an explicit window against it."""
    if macro.whole:
        return replace(macro, r0=0, c0=0, r1=shape[0], c1=shape[1])
    if macro.shape != shape:
        want = f"m{macro.index}[{macro.r0}:{macro.r0 + shape[0]},{macro.c0}:{macro.c0 + shape[1]}]"
        raise OperandError(
            f"macro window {_shape(macro.shape)} does not match the {_shape(shape)} data; "
            f"use {want}",
            i,
        )
    return macro


def _macro_at(ops: tuple[Operand, ...], i: int) -> MacroRef:
    op = ops[i]
    assert isinstance(op, MacroRef)
    return op


def rule_mload(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    src = _view(ops, 1)
    return (_sized_window(_macro_at(ops, 0), src.shape, 0), src)


def rule_mload_t(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    src = _view(ops, 1)
    return (_sized_window(_macro_at(ops, 0), (src.cols, src.rows), 0), src)


def rule_mvm(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    dst, src = _view(ops, 0), _view(ops, 1)
    if dst.rows != src.rows:
        raise OperandError(
            f"destination has {dst.rows} rows but the input has {src.rows}; they must agree", 0
        )
    return (dst, src, _sized_window(_macro_at(ops, 2), (src.cols, dst.cols), 2))


def rule_mvm_i4(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    """As mvm, the window's cells holding two int4 weights each: dst has 2 columns per
    cell (2c - 1 when the last cell's high half is padding)."""
    dst, src = _view(ops, 0), _view(ops, 1)
    if dst.rows != src.rows:
        raise OperandError(
            f"destination has {dst.rows} rows but the input has {src.rows}; they must agree", 0
        )
    cells = (dst.cols + 1) // 2
    return (dst, src, _sized_window(_macro_at(ops, 2), (src.cols, cells), 2))


def rule_binary(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    _same_shape(ops, 1)
    _broadcast(ops, 2)
    return ops


def rule_shift(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    rule_binary(ops)
    _imm_in(ops, 2, 0, SHIFT_MAX, "shift")
    return ops


def rule_div(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    rule_binary(ops)
    b = ops[2]
    if isinstance(b, Imm) and b.value <= 0:
        raise OperandError(f"divisor must be positive, got {b.value}", 2)
    return ops


def rule_req(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    _same_shape(ops, 1)
    for i in (2, 3, 4):
        _broadcast(ops, i)
    _imm_in(ops, 3, 0, SHIFT_MAX, "shift")
    lo, hi = dtype_range(_view(ops, 0).dtype)
    _imm_in(ops, 5, lo, hi, "clamp low")
    _imm_in(ops, 6, lo, hi, "clamp high")
    low, high = ops[5], ops[6]
    if isinstance(low, Imm) and isinstance(high, Imm) and low.value > high.value:
        raise OperandError(f"clamp low {low.value} is above clamp high {high.value}", 5)
    return ops


def rule_lut(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    _same_shape(ops, 1)
    if _view(ops, 2).shape != (1, 256):
        raise OperandError(f"table must be 1x256, not {_shape(_view(ops, 2).shape)}", 2)
    _same_dtype(ops, 2)
    return ops


def rule_reduce(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    dst, src = _view(ops, 0), _view(ops, 1)
    if dst.shape != (src.rows, 1):
        raise OperandError(f"destination must be {src.rows}x1, not {_shape(dst.shape)}", 0)
    return ops


def rule_sel(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    for i in (1, 2, 3):
        _broadcast(ops, i)
    return ops


def rule_fill(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    dtype = _view(ops, 0).dtype
    lo, hi = dtype_range(dtype)
    value = ops[1]
    if isinstance(value, Imm) and not lo <= value.value <= hi:
        raise OperandError(f"{value.value} does not fit {dtype} [{lo}, {hi}]", 1)
    return ops


def rule_scatter(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    return _indexed_rows(ops, 1, "source")  # table, src, index


def rule_gather(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    return _indexed_rows(ops, 0, "destination")  # dst, table, index


def _indexed_rows(ops: tuple[Operand, ...], k: int, what: str) -> tuple[Operand, ...]:
    """gather / scatter: operand `k` holds one table row per index entry; the table is the
    other of operands 0 and 1, the [rows x 1] index is operand 2."""
    rows, table, idx = _view(ops, k), _view(ops, 1 - k), _view(ops, 2)
    if rows.cols != table.cols:
        raise OperandError(f"{what} has {rows.cols} columns, the table {table.cols}", k)
    if idx.shape != (rows.rows, 1):
        raise OperandError(f"index must be {rows.rows}x1, not {_shape(idx.shape)}", 2)
    _same_dtype(ops, 1)
    return ops


def rule_gather_masked(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    """gather.m: as gather (a negative index selects a zero row, checked at run time)."""
    return _indexed_rows(ops, 0, "destination")


def rule_dma_masked(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    """dma.m: destination and source tables of one shape and dtype, an [n x 1] index."""
    dst, src, idx = _view(ops, 0), _view(ops, 1), _view(ops, 2)
    if dst.shape != src.shape:
        raise OperandError(f"source must be {_shape(dst.shape)}, not {_shape(src.shape)}", 1)
    if idx.cols != 1:
        raise OperandError(f"index must be n x 1, not {_shape(idx.shape)}", 2)
    _same_dtype(ops, 1)
    return ops


def rule_mload_masked(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    """mload.m: the window is the source's shape; one index entry per source row."""
    src, idx = _view(ops, 1), _view(ops, 2)
    if idx.shape != (src.rows, 1):
        raise OperandError(f"index must be {src.rows}x1, not {_shape(idx.shape)}", 2)
    return (_sized_window(_macro_at(ops, 0), src.shape, 0), src, idx)


def rule_mload_t_masked(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    """mload.t.m: the window is the source's transpose; one index entry per source row
    (= window column)."""
    src, idx = _view(ops, 1), _view(ops, 2)
    if idx.shape != (src.rows, 1):
        raise OperandError(f"index must be {src.rows}x1, not {_shape(idx.shape)}", 2)
    return (_sized_window(_macro_at(ops, 0), (src.cols, src.rows), 0), src, idx)


def rule_nonzero_index(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    """nzidx: one destination row per source column, able to hold every column number."""
    dst, src = _view(ops, 0), _view(ops, 1)
    if dst.shape != (src.cols, 1):
        raise OperandError(f"destination must be {src.cols}x1, not {_shape(dst.shape)}", 0)
    if src.cols - 1 > dtype_range(dst.dtype)[1]:
        raise OperandError(f"{dst.dtype} cannot hold column number {src.cols - 1}", 0)
    return ops
