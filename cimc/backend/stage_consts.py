"""A program's small constants copied into the global buffer before anything else runs.

Why: the DRAM channel serves transfers first come first served (isa/SPEC.md, section 8)
and the weight prefetcher keeps it booked up to its lookahead window ahead of use
(prefetch.py). A node's own constants (biases, requant multipliers and shifts, layer-norm
gains, lookup tables), loaded where the node runs, wait behind that window of weight
pieces however far hoist.py moves them: measured on BERT-base, `large`, 4 layers, the
bias and multiplier loads of the first query projection waited ~40k cycles and held the
whole layer back 30k. Read from gb they wait for nothing. The copies read the same DRAM
bytes once, as the loads did, but all at the start, in program order, ahead of the
weights.

What: every dram `.const` that only `dma`s read (not the weight image, not a table a
`gather` indexes), in declaration order while it fits in gb above every other
declaration, is copied by core 0 into the region `const.gb`; then every core passes one
barrier (the copies happen-before every read, section 6), and each `dma` reading such a
constant reads the same bytes of its copy. A copy carries the source comment of its
constant's first reader, so it is attributed to that graph node.
"""

from __future__ import annotations

from dataclasses import replace

from cimc.backend.prefetch import IMAGE
from cimc.machine.arch import Arch
from cimc.machine.program import CoreItem, Decl, Instr, Program, View

REGION = "const.gb"
ALIGN = 64  # bytes: every copy keeps the natural alignment of its constant's views


def stage_consts(program: Program, arch: Arch) -> Program:
    """`program` with its small constants read from a gb copy (see the module doc)."""
    staged, readers = _placement(program, arch)
    if not staged:
        return program
    base = min(staged.values())
    end = max(staged[d.name] + d.nbytes for d in program.decls if d.name in staged)
    region = Decl("region", REGION, "gb", base, None, 0, 0, end - base)
    decls = {d.name: d for d in program.decls}
    cores = []
    for stream in program.cores:
        items: list[CoreItem] = []
        if stream.core == program.cores[0].core:
            items += [_copy(decls[n], addr, base, readers[n]) for n, addr in staged.items()]
        items.append(Instr("barrier", ()))
        items += [_reread(item, decls, staged, base) for item in stream.items]
        cores.append(replace(stream, items=tuple(items)))
    return replace(program, header=(*program.header, region), cores=tuple(cores))


def _placement(program: Program, arch: Arch) -> tuple[dict[str, int], dict[str, str | None]]:
    """Constant name -> gb address of its copy, for the constants that are staged; and
    the comment of each one's first reader (the copy is attributed to that graph node)."""
    only_dma = {d.name for d in program.decls_of("const") if d.space == "dram"} - {IMAGE}
    readers: dict[str, str | None] = {}
    for stream in program.cores:
        for instr in stream.instrs:
            for k, op in enumerate(instr.operands):
                if not isinstance(op, View) or op.symbol not in only_dma:
                    continue
                if instr.opcode != "dma" or k != 1:  # a gather's table, a write...
                    only_dma.discard(op.symbol)
                readers.setdefault(op.symbol, instr.comment)
    top = max((d.end for d in program.decls if d.space == "gb"), default=0)
    addr, room = _align(top), arch.space_bytes("gb")
    placed: dict[str, int] = {}
    for decl in program.decls_of("const"):
        if decl.name not in only_dma:
            continue
        at = addr + decl.addr % ALIGN  # same offset in a 64-byte line: views stay aligned
        if at + decl.nbytes > room:
            break  # the rest stays in dram (declaration order is roughly the order of use)
        placed[decl.name] = at
        addr = _align(at + decl.nbytes)
    return placed, readers


def _copy(decl: Decl, addr: int, base: int, comment: str | None) -> Instr:
    n = decl.nbytes
    dst = View("gb", addr, "i8", 1, n, symbol=REGION, offset=addr - base)
    src = View("dram", decl.addr, "i8", 1, n, symbol=decl.name)
    return Instr("dma", (dst, src), comment)


def _reread(item: CoreItem, decls: dict[str, Decl], staged: dict[str, int], base: int) -> CoreItem:
    """A dma reading a staged constant reads its copy (same bytes, same shape)."""
    if not isinstance(item, Instr) or item.opcode != "dma":
        return item
    src = item.operands[1]
    if not isinstance(src, View) or src.symbol not in staged:
        return item
    addr = staged[src.symbol] + src.addr - decls[src.symbol].addr
    copy = replace(src, space="gb", addr=addr, symbol=REGION, offset=addr - base)
    return replace(item, operands=(item.operands[0], copy, *item.operands[2:]))


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN
