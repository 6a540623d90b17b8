"""Where the weights in a macro came from: the mload source traced back to a declaration.

An `mload` from gb names its source directly. One from sp reads bytes that an earlier
instruction of the same core wrote; when that writer is a `dma` from a declared object
(a weight constant in flash/dram/gb, or an activation region) the source is mapped element
by element through the dma to the declaration's rows and columns. A source in a streamed
weight image is named by the layer tile the image's header map puts there (image.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cimc.inspect.image import ImageMap, image_tiles, tile_label
from cimc.machine.opcodes import spec_of
from cimc.machine.program import Decl, Instr, Program, View


@dataclass(frozen=True)
class TileSource:
    """`decl[r0:r1, c0:c1]` of a declaration, or a description when it is computed data."""

    label: str
    decl: str | None = None
    kind: str | None = None  # const, input, output, region
    offset: int = 0  # byte offset of the tile's first element in the declaration
    via: str | None = None  # streamed: where in the weight image, e.g. `weights.img+6144`

    @property
    def text(self) -> str:
        """The label, with the image position of a streamed tile."""
        return self.label if self.via is None else f"{self.label} via {self.via}"


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


def _label(program: Program, images: ImageMap, space: str, first: int, last: int) -> TileSource:
    """Name the declaration bytes `first..last` (a tile's first and last element) fall in."""
    decl = _decl_at(program, space, first)
    if decl is None:
        return TileSource(f"{space}[{first:#x}]")
    off, end = first - decl.addr, last - decl.addr
    streamed = tile_label(images.get(decl.name, ()), off, end)
    if streamed is not None:
        return TileSource(streamed, decl.name, decl.kind, off, f"{decl.name}+{off}")
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
    return core_sources(program, core)[pc]


def core_sources(
    program: Program, core: int, images: ImageMap | None = None
) -> dict[int, TileSource]:
    """The origin of every mload of `core`, by position in its stream (`images`: the
    program's `image_tiles`, read once by a caller that asks for every core).

    One forward pass keeps, for every sp byte, the index of the latest instruction that wrote
    it (exact per byte, strided views included), so a whole program costs one walk.
    """
    images = image_tiles(program) if images is None else images
    instrs = program.instrs(core)
    writer = np.full(_sp_extent(instrs), -1, dtype=np.int64)
    found: dict[int, TileSource] = {}
    for pc, instr in enumerate(instrs):
        if instr.opcode.startswith("mload"):
            found[pc] = _source(program, images, core, instrs, writer, instr)
        for out in spec_of(instr).writes(instr):
            if out.space == "sp":
                for lo, hi in out.row_ranges():
                    writer[lo:hi] = pc
    return found


def _sp_extent(instrs: tuple[Instr, ...]) -> int:
    ends = [v.end for i in instrs for v, _ in spec_of(i).views(i) if v.space == "sp"]
    return max(ends, default=0)


def _source(
    program: Program,
    images: ImageMap,
    core: int,
    instrs: tuple[Instr, ...],
    writer: np.ndarray,
    instr: Instr,
) -> TileSource:
    src = instr.operands[1]
    assert isinstance(src, View)
    last = _element(src, src.rows - 1, src.cols - 1)
    if src.space != "sp":
        return _label(program, images, src.space, src.addr, last)
    latest = max(int(writer[lo:hi].max()) for lo, hi in src.row_ranges())
    if latest < 0:
        return TileSource("sp never written before (zeros)")
    producer = instrs[latest]
    if producer.opcode != "dma":
        return TileSource(f"computed on core {core} by {producer.opcode} (line {producer.line})")
    dst, dsrc = producer.operands[0], producer.operands[1]
    assert isinstance(dst, View) and isinstance(dsrc, View)
    first = _through_dma(dsrc, dst, src.addr)
    return _label(program, images, dsrc.space, first, _through_dma(dsrc, dst, last))
