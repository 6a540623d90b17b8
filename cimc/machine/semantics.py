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
from cimc.machine.program import Imm, Instr, MacroRef, Operand, View
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


# --- data movement -------------------------------------------------------------------------


@register_kernel("dma")
def _dma(m: Machine, cs: CoreState, instr: Instr) -> bool:
    dst, src = _view(instr.operands[0]), _view(instr.operands[1])
    data = m.array(cs.core, src).copy()  # copy first: source and destination may overlap
    m.array(cs.core, dst)[...] = data
    return True


@register_kernel("gather")
def _gather(m: Machine, cs: CoreState, instr: Instr) -> bool:
    dst, table, index = (_view(op) for op in instr.operands)
    idx = m.array(cs.core, index)[:, 0].astype(np.int64)
    bad = (idx < 0) | (idx >= table.rows)
    if bad.any():
        row = int(np.argmax(bad))
        raise KernelError(
            f"index {idx[row]} in row {row} is outside the table's 0..{table.rows - 1}"
        )
    m.array(cs.core, dst)[...] = m.array(cs.core, table)[idx]
    return True


def _peer(m: Machine, cs: CoreState, op: Operand) -> int:
    peer = _imm(op)
    if not any(c.core == peer for c in m.cores):
        raise KernelError(f"core {peer} does not exist in this program")
    return peer


@register_kernel("send")
def _send(m: Machine, cs: CoreState, instr: Instr) -> bool:
    peer, src, tag = _peer(m, cs, instr.operands[0]), _view(instr.operands[1]), instr.operands[2]
    data = m.array(cs.core, src).copy()
    m.fifos.setdefault((cs.core, peer, _imm(tag)), deque()).append(Message(data, src.dtype, instr))
    return True


@register_kernel("recv")
def _recv(m: Machine, cs: CoreState, instr: Instr) -> bool:
    peer, dst, tag = _peer(m, cs, instr.operands[0]), _view(instr.operands[1]), instr.operands[2]
    fifo = m.fifos.get((peer, cs.core, _imm(tag)))
    if not fifo:
        return False
    msg = fifo.popleft()
    if msg.data.shape != dst.shape or msg.dtype != dst.dtype:
        sent = f"{msg.dtype}[{msg.data.shape[0]}x{msg.data.shape[1]}]"
        raise KernelError(
            f"receives {dst.dtype}[{dst.rows}x{dst.cols}] but the matching send (line "
            f"{msg.instr.line}) sent {sent}"
        )
    m.array(cs.core, dst)[...] = msg.data
    return True


@register_kernel("barrier")
def _barrier(m: Machine, cs: CoreState, instr: Instr) -> bool:
    if not cs.at_barrier:
        cs.barriers += 1
        cs.at_barrier = True
    if min(c.barriers for c in m.cores) < cs.barriers:
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


@register_kernel("mvm", "mvm.acc")
def _mvm(m: Machine, cs: CoreState, instr: Instr) -> bool:
    dst, src, ref = _view(instr.operands[0]), _view(instr.operands[1]), _macro(instr.operands[2])
    weights = m.macro_window_f32(cs.core, ref)
    if instr.opcode == "mvm.acc":
        result = k.matmul_exact(m.array(cs.core, src), weights)
        result += m.array(cs.core, dst)
        m.store(cs.core, dst, result)  # range-checked: the running sum may leave int32
    else:  # a single product always fits int32 (see matmul_exact)
        m.array(cs.core, dst)[...] = k.matmul_exact(m.array(cs.core, src), weights, np.int32)
    m.macs += src.rows * src.cols * dst.cols
    return True


# --- vector unit ---------------------------------------------------------------------------

_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "add": k.add,
    "sub": k.sub,
    "mul": k.mul,
    "max": np.maximum,
    "min": np.minimum,
    "shl": k.shl,
    "rshr": k.rshr,
    "div": k.div,
}


@register_kernel(*_BINARY)
def _binary(m: Machine, cs: CoreState, instr: Instr) -> bool:
    dst, a, b = instr.operands
    result = _BINARY[instr.opcode](m.read(cs.core, a), m.read(cs.core, b))
    m.store(cs.core, _view(dst), np.broadcast_to(result, _view(dst).shape))
    return True


@register_kernel("req")
def _req(m: Machine, cs: CoreState, instr: Instr) -> bool:
    dst, a, mult, shift, zp, lo, hi = instr.operands
    r = m.read
    result = k.req(
        r(cs.core, a), r(cs.core, mult), r(cs.core, shift), r(cs.core, zp), _imm(lo), _imm(hi)
    )
    m.store(cs.core, _view(dst), result)
    return True


_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "isqrt": k.isqrt,
    "rsum": k.rsum,
    "rmax": k.rmax,
    "mov": lambda a: a,
    "transpose": lambda a: a.T,
}


@register_kernel(*_UNARY)
def _unary(m: Machine, cs: CoreState, instr: Instr) -> bool:
    dst, a = instr.operands
    m.store(cs.core, _view(dst), _UNARY[instr.opcode](m.read(cs.core, a)))
    return True


@register_kernel("lut")
def _lut(m: Machine, cs: CoreState, instr: Instr) -> bool:
    dst, a, table = (_view(op) for op in instr.operands)
    values = k.lut(m.read(cs.core, a), m.read(cs.core, table))
    m.store(cs.core, dst, values)
    return True


@register_kernel("sel")
def _sel(m: Machine, cs: CoreState, instr: Instr) -> bool:
    dst, cond, a, b = instr.operands
    result = k.sel(m.read(cs.core, cond), m.read(cs.core, a), m.read(cs.core, b))
    m.store(cs.core, _view(dst), np.broadcast_to(result, _view(dst).shape))
    return True


@register_kernel("fill")
def _fill(m: Machine, cs: CoreState, instr: Instr) -> bool:
    dst, value = _view(instr.operands[0]), _imm(instr.operands[1])
    m.store(cs.core, dst, np.full(dst.shape, value, dtype=np.int64))
    return True
