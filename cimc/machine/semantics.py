"""What each opcode does to the machine state: the interpreter's kernels, one per opcode.

Each kernel is registered in the opcode table (`register_kernel`) and has the signature
`kernel(machine, core_state, instr) -> bool`; False means "blocked, retry later" (recv
before its send, barrier before every core arrived). Errors are `KernelError`s; the
interpreter adds the instruction's location and the core id.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np

from cimc.machine import kernels as k
from cimc.machine.kernels import KernelError
from cimc.machine.opcodes import register_kernel
from cimc.machine.program import (
    DTYPES,
    Imm,
    Instr,
    MacroRef,
    Operand,
    View,
    destinations,
    dtype_range,
)
from cimc.machine.state import CoreState, Machine, Message


def _view(op: Operand) -> View:
    assert isinstance(op, View)  # the parser checked operand kinds
    return op


def _macro(op: Operand) -> MacroRef:
    assert isinstance(op, MacroRef)
    return op


def _imm(op: Operand) -> int:
    assert isinstance(op, Imm)
    return op.value


_RANGE: dict[str, k.Span] = {d: dtype_range(d) for d in DTYPES}
_NARROW: dict[str, k.Span] = {d: r for d, r in _RANGE.items() if d != "i64"}


def _span(op: Operand) -> k.Span | None:
    """Bounds of an operand's values known without reading them (None: i64 view)."""
    if isinstance(op, Imm):
        return (op.value, op.value)
    assert isinstance(op, View)
    return _NARROW.get(op.dtype)


def _union(a: k.Span | None, b: k.Span | None) -> k.Span | None:
    return None if a is None or b is None else (min(a[0], b[0]), max(a[1], b[1]))


# --- data movement -------------------------------------------------------------------------


@register_kernel("dma")
def _dma(m: Machine, cs: CoreState, instr: Instr) -> bool:
    dst, src = _view(instr.operands[0]), _view(instr.operands[1])
    # numpy's assignment buffers overlapping source and destination itself
    m.array(cs.core, dst)[...] = m.array(cs.core, src)
    return True


def _table_rows(m: Machine, cs: CoreState, index: View, table: View) -> np.ndarray:
    """The row indices of a gather / scatter, each checked to be a row of `table`."""
    idx = m.array(cs.core, index)[:, 0].astype(np.int64)
    bad = (idx < 0) | (idx >= table.rows)
    if bad.any():
        row = int(np.argmax(bad))
        raise KernelError(
            f"index {idx[row]} in row {row} is outside the table's 0..{table.rows - 1}"
        )
    return idx


@register_kernel("gather")
def _gather(m: Machine, cs: CoreState, instr: Instr) -> bool:
    dst, table, index = (_view(op) for op in instr.operands)
    idx = _table_rows(m, cs, index, table)
    m.array(cs.core, dst)[...] = m.array(cs.core, table)[idx]
    return True


def _masked_rows(m: Machine, cs: CoreState, index: View, table_rows: int | None) -> np.ndarray:
    """The index column of gather.m / mload.m (negative: no row), recorded for the cost
    model; with `table_rows`, a non-negative entry must name one of that many rows."""
    idx = m.array(cs.core, index)[:, 0].astype(np.int64)
    bad = idx >= (table_rows if table_rows is not None else np.iinfo(np.int64).max)
    if table_rows is not None and bad.any():
        row = int(np.argmax(bad))
        raise KernelError(
            f"index {idx[row]} in row {row} is outside the table's 0..{table_rows - 1}"
        )
    m.dynamic[(cs.core, cs.pc)] = idx
    return idx


@register_kernel("gather.m")
def _gather_masked(m: Machine, cs: CoreState, instr: Instr) -> bool:
    dst, table, index = (_view(op) for op in instr.operands)
    idx = _masked_rows(m, cs, index, table.rows)
    rows = m.array(cs.core, table)[np.maximum(idx, 0)]
    rows[idx < 0] = 0
    m.array(cs.core, dst)[...] = rows
    return True


@register_kernel("dma.m")
def _dma_masked(m: Machine, cs: CoreState, instr: Instr) -> bool:
    dst, src, index = (_view(op) for op in instr.operands)
    idx = _masked_rows(m, cs, index, src.rows)
    rows = idx[idx >= 0]
    data = m.array(cs.core, src)[rows].copy()  # read first: the views may overlap
    m.array(cs.core, dst)[rows] = data
    return True


@register_kernel("scatter")
def _scatter(m: Machine, cs: CoreState, instr: Instr) -> bool:
    table, src, index = (_view(op) for op in instr.operands)
    idx = _table_rows(m, cs, index, table)
    data = m.array(cs.core, src).copy()  # read completely first: the views may overlap
    target = m.array(cs.core, table)
    for i, r in enumerate(idx):  # in row order: a repeated index keeps the last row
        target[r] = data[i]
    return True


def _peer(m: Machine, core: int) -> int:
    if core not in m.scratchpads:  # one scratchpad per core of the program
        raise KernelError(f"core {core} does not exist in this program")
    return core


@register_kernel("send", "mcast")
def _send(m: Machine, cs: CoreState, instr: Instr) -> bool:
    """Enqueue one copy of the source for every destination (recv only reads it)."""
    src, tag, cores = _view(instr.operands[1]), _imm(instr.operands[2]), destinations(instr)
    for peer in cores:  # every destination checked before any message is out
        _peer(m, peer)
    msg = Message(m.array(cs.core, src).copy(), src.dtype, instr)
    for peer in cores:
        fifo = m.fifos.get((cs.core, peer, tag))
        if fifo is None:  # not setdefault: that would build a deque at every send
            fifo = m.fifos[(cs.core, peer, tag)] = deque()
        fifo.append(msg)
    return True


@register_kernel("recv")
def _recv(m: Machine, cs: CoreState, instr: Instr) -> bool:
    peer, dst, tag = _peer(m, _imm(instr.operands[0])), _view(instr.operands[1]), instr.operands[2]
    key = (peer, cs.core, _imm(tag))
    fifo = m.fifos.get(key)
    if not fifo:
        cs.waits_on = key
        return False
    msg = fifo.popleft()
    if msg.data.shape != dst.shape or msg.dtype != dst.dtype:
        sent = f"{msg.dtype}[{msg.data.shape[0]}x{msg.data.shape[1]}]"
        raise KernelError(
            f"receives {dst.dtype}[{dst.rows}x{dst.cols}] but the matching "
            f"{msg.instr.opcode} (line {msg.instr.line}) sent {sent}"
        )
    m.array(cs.core, dst)[...] = msg.data
    return True


@register_kernel("barrier")
def _barrier(m: Machine, cs: CoreState, instr: Instr) -> bool:
    if not cs.at_barrier:
        cs.barriers += 1
        cs.at_barrier = True
        m.barrier_arrivals[cs.barriers] = m.barrier_arrivals.get(cs.barriers, 0) + 1
    if m.barrier_arrivals[cs.barriers] < len(m.cores):
        return False
    cs.at_barrier = False
    return True


@register_kernel("halt")
def _halt(m: Machine, cs: CoreState, instr: Instr) -> bool:
    cs.halted = True
    return True


# --- macro ---------------------------------------------------------------------------------


@register_kernel("mload", "mload.t")
def _mload(m: Machine, cs: CoreState, instr: Instr) -> bool:
    ref, src = _macro(instr.operands[0]), _view(instr.operands[1])
    data = m.array(cs.core, src)
    m.write_macro(cs.core, ref, data.T if instr.opcode == "mload.t" else data)
    return True


@register_kernel("mload.m")
def _mload_masked(m: Machine, cs: CoreState, instr: Instr) -> bool:
    """Rows with a negative index keep their cells (only the sign matters: the index is
    the gather.m's that staged the rows); the whole window counts as written (a cell no
    mload reached holds the reset value 0)."""
    ref, src, index = _macro(instr.operands[0]), _view(instr.operands[1]), instr.operands[2]
    idx = _masked_rows(m, cs, _view(index), None)
    window = (slice(ref.r0, ref.r1), slice(ref.c0, ref.c1))
    state = m.macro(cs.core, ref)
    cells = state.weights[window].copy()
    take = idx >= 0
    cells[take] = m.array(cs.core, src)[take]
    m.write_macro(cs.core, ref, cells)
    return True


@register_kernel("mload.t.m")
def _mload_t_masked(m: Machine, cs: CoreState, instr: Instr) -> bool:
    """As mload.m on the transpose: source row i goes to window column i when
    index[i, 0] >= 0 (e.g. the up-projection columns of the neurons a predictor names)."""
    ref, src, index = _macro(instr.operands[0]), _view(instr.operands[1]), instr.operands[2]
    idx = _masked_rows(m, cs, _view(index), None)
    window = (slice(ref.r0, ref.r1), slice(ref.c0, ref.c1))
    state = m.macro(cs.core, ref)
    cells = state.weights[window].copy()
    take = idx >= 0
    cells[:, take] = m.array(cs.core, src)[take].T
    m.write_macro(cs.core, ref, cells)
    return True


@register_kernel("mvm", "mvm.acc", "mvm.i4", "mvm.i4.acc")
def _mvm(m: Machine, cs: CoreState, instr: Instr) -> bool:
    dst, src, ref = _view(instr.operands[0]), _view(instr.operands[1]), _macro(instr.operands[2])
    weights = m.macro_window_f32(cs.core, ref)
    if instr.opcode.startswith("mvm.i4"):
        weights = k.unpack_int4(weights)[:, : dst.cols]
    x = m.array(cs.core, src)
    _check_input_bits(x, m.arch.macro.input_bits)
    # A single product always fits int32 (see matmul_exact).
    product = k.matmul_exact(x, weights, np.int32)
    if instr.opcode.endswith(".acc"):
        acc = m.array(cs.core, dst)
        if k.room_in_i32(acc, src.cols * k.MAX_INT8_PRODUCT):
            acc += product  # in place, no int64 temporaries: the sum cannot leave int32
        else:  # range-checked: the running sum may leave int32
            m.store(cs.core, dst, acc.astype(np.int64) + product)
    else:
        m.array(cs.core, dst)[...] = product
    m.macs += src.rows * src.cols * dst.cols
    return True


def _check_input_bits(x: np.ndarray, bits: int) -> None:
    """A macro of `macro.input_bits` < 8 streams that many bits per input: an i8 input
    outside their signed range is not what the cost model timed (SPEC section 4)."""
    if bits >= 8:
        return
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    bad = np.argwhere((x < lo) | (x > hi))
    if bad.size:
        r, c = (int(i) for i in bad[0])
        raise KernelError(
            f"input [{r}, {c}] = {int(x[r, c])} is outside the {bits}-bit inputs of the "
            f"preset's macros ({lo}..{hi}, macro.input_bits)"
        )


# --- vector unit ---------------------------------------------------------------------------

Binary = Callable[[np.ndarray, np.ndarray, k.Span | None, k.Span | None], np.ndarray]
_BINARY: dict[str, Binary] = {
    "add": k.add,
    "sub": k.sub,
    "mul": k.mul,
    "max": lambda a, b, sa, sb: np.maximum(a, b),
    "min": lambda a, b, sa, sb: np.minimum(a, b),
    "shl": k.shl,
    "rshr": k.rshr,
    "div": k.div,
}


# add, sub, mul: the bound of the result from the operands' bounds.
_BOUNDS: dict[str, Callable[[k.Span, k.Span], k.Span]] = {
    "add": k.sum_span,
    "sub": k.difference_span,
    "mul": k.product_span,
}
_UFUNCS = {"add": np.add, "sub": np.subtract, "mul": np.multiply}


@register_kernel(*_BINARY)
def _binary(m: Machine, cs: CoreState, instr: Instr) -> bool:
    dst, a, b = _view(instr.operands[0]), instr.operands[1], instr.operands[2]
    sa, sb = _span(a), _span(b)
    if sa is not None and sb is not None and instr.opcode in _BOUNDS:
        lo, hi = _BOUNDS[instr.opcode](sa, sb)
        dlo, dhi = _RANGE[dst.dtype]
        if dlo <= lo and hi <= dhi:  # no error possible: one ufunc, in int64, into dst
            ufunc = _UFUNCS[instr.opcode]
            ufunc(_raw(m, cs, a), _raw(m, cs, b), out=m.array(cs.core, dst), dtype=np.int64)
            return True
    result = _BINARY[instr.opcode](m.read(cs.core, a), m.read(cs.core, b), sa, sb)
    known = _union(sa, sb) if instr.opcode in ("max", "min") else None
    m.store(cs.core, dst, _to_shape(result, dst), known)
    return True


def _raw(m: Machine, cs: CoreState, op: Operand) -> np.ndarray | int:
    """An operand as stored (a ufunc with dtype=int64 widens it as it reads)."""
    return op.value if isinstance(op, Imm) else m.array(cs.core, _view(op))


def _to_shape(result: np.ndarray, dst: View) -> np.ndarray:
    return result if result.shape == dst.shape else np.broadcast_to(result, dst.shape)


@register_kernel("req")
def _req(m: Machine, cs: CoreState, instr: Instr) -> bool:
    dst, a, mult, shift, zp, lo, hi = instr.operands
    r = m.read
    spans = (_span(a), _span(mult), _span(shift), _span(zp))
    result = k.req(
        r(cs.core, a),
        r(cs.core, mult),
        r(cs.core, shift),
        r(cs.core, zp),
        _imm(lo),
        _imm(hi),
        spans,
    )
    m.store(cs.core, _view(dst), result, (_imm(lo), _imm(hi)))
    return True


_UNARY: dict[str, Callable[[np.ndarray, k.Span | None], np.ndarray]] = {
    "isqrt": k.isqrt,
    "rsum": k.rsum,
    "rmax": lambda a, sa: k.rmax(a),
    "mov": lambda a, sa: a,
    "transpose": lambda a, sa: a.T,
}
_WITHIN_OPERAND = ("rmax", "mov", "transpose")  # results lie within the operand's values


@register_kernel(*_UNARY)
def _unary(m: Machine, cs: CoreState, instr: Instr) -> bool:
    dst, a = _view(instr.operands[0]), instr.operands[1]
    sa = _span(a)
    result = _UNARY[instr.opcode](m.read(cs.core, a), sa)
    m.store(cs.core, dst, result, sa if instr.opcode in _WITHIN_OPERAND else None)
    return True


@register_kernel("lut")
def _lut(m: Machine, cs: CoreState, instr: Instr) -> bool:
    dst, a, table = (_view(op) for op in instr.operands)
    values = k.lut(m.read(cs.core, a), m.read(cs.core, table), _span(a))
    m.store(cs.core, dst, values, _span(table))
    return True


@register_kernel("sel")
def _sel(m: Machine, cs: CoreState, instr: Instr) -> bool:
    dst, cond, a, b = instr.operands
    result = k.sel(m.read(cs.core, cond), m.read(cs.core, a), m.read(cs.core, b))
    m.store(cs.core, _view(dst), _to_shape(result, _view(dst)), _union(_span(a), _span(b)))
    return True


@register_kernel("nzidx")
def _nonzero_index(m: Machine, cs: CoreState, instr: Instr) -> bool:
    dst, a = _view(instr.operands[0]), _view(instr.operands[1])
    active = np.flatnonzero((m.array(cs.core, a) != 0).any(axis=0))
    out = np.full((dst.rows, 1), -1, np.int64)
    out[: active.size, 0] = active
    m.store(cs.core, dst, out)
    return True


@register_kernel("fill")
def _fill(m: Machine, cs: CoreState, instr: Instr) -> bool:
    dst, value = _view(instr.operands[0]), _imm(instr.operands[1])
    m.store(cs.core, dst, np.full(dst.shape, value, dtype=np.int64))
    return True
