"""Where the weights in a macro came from: the mload source traced back to a declaration.

An `mload` from gb names its source directly. One from sp reads bytes that an earlier
instruction of the same core wrote; when that writer is a `dma` from a declared object
(a weight constant in flash/dram/gb, or an activation region) the source is mapped element
by element through the dma to the declaration's rows and columns.
"""

from __future__ import annotations

from dataclasses import dataclass

from cimc.machine.opcodes import spec_of
from cimc.machine.program import Decl, Instr, Program, View


@dataclass(frozen=True)
class TileSource:
    """`decl[r0:r1, c0:c1]` of a declaration, or a description when it is computed data."""

    label: str
    decl: str | None = None
    kind: str | None = None  # const, input, output, region
    offset: int = 0  # byte offset of the tile's first element in the declaration


def _decl_at(program: Program, space: str, addr: int) -> Decl | None:
    for decl in program.decls:
        if decl.space == space and decl.addr <= addr < decl.end:
            return decl
    return None


def _element(view: View, r: int, c: int) -> int:
    return view.addr + (r * view.stride + c) * view.elem_bytes


def _through_dma(src: View, dst: View, addr: int) -> int:
    """Address in the dma's source of the byte at `addr` of its destination."""
    index, within = divmod(addr - dst.addr, dst.elem_bytes)
    r, c = divmod(index, dst.stride)
    return _element(src, r, c) + within


def _label(program: Program, space: str, first: int, last: int) -> TileSource:
    """Name the declaration bytes `first..last` (a tile's first and last element) fall in."""
    decl = _decl_at(program, space, first)
    if decl is None:
        return TileSource(f"{space}[{first:#x}]")
    off, end = first - decl.addr, last - decl.addr
    if decl.dtype is None or decl.cols == 0:
        return TileSource(f"{decl.name}+{off:#x}", decl.name, decl.kind, off)
    row_bytes = decl.cols * (decl.nbytes // (decl.rows * decl.cols))
    r0, c0 = divmod(off, row_bytes)
    r1, c1 = divmod(end, row_bytes)
    esize = row_bytes // decl.cols
    text = f"{decl.name}[{r0}:{r1 + 1}, {c0 // esize}:{c1 // esize + 1}]"
    return TileSource(text, decl.name, decl.kind, off)


def trace_source(program: Program, core: int, pc: int) -> TileSource:
    """The origin of the weights mload `pc` of `core` writes."""
    instrs = program.instrs(core)
    src = instrs[pc].operands[1]
    assert isinstance(src, View)
    last = _element(src, src.rows - 1, src.cols - 1)
    if src.space != "sp":
        return _label(program, src.space, src.addr, last)
    writer = _last_writer(instrs, pc, src)
    if writer is None:
        return TileSource("sp never written before (zeros)")
    instr = instrs[writer]
    if instr.opcode != "dma":
        return TileSource(f"computed on core {core} by {instr.opcode} (line {instr.line})")
    dst, dsrc = instr.operands[0], instr.operands[1]
    assert isinstance(dst, View) and isinstance(dsrc, View)
    first = _through_dma(dsrc, dst, src.addr)
    return _label(program, dsrc.space, first, _through_dma(dsrc, dst, last))


def _last_writer(instrs: tuple[Instr, ...], pc: int, view: View) -> int | None:
    """Index of the latest instruction before `pc` writing sp bytes `view` touches."""
    for i in range(pc - 1, -1, -1):
        for out in spec_of(instrs[i]).writes(instrs[i]):
            if out.space == "sp" and out.addr < view.end and view.addr < out.end:
                return i
    return None
