"""A program's small constants copied into the global buffer before anything else runs.

Why: the DRAM channel serves transfers first come first served (isa/SPEC.md, section 8)
and the weight prefetcher keeps it booked up to its lookahead window ahead of use
(prefetch.py). A node's own constants (biases, requant multipliers and shifts, layer-norm
gains, lookup tables), loaded where the node runs, wait behind that window of weight
pieces however far hoist.py moves them, and hold their whole layer back. Read from gb they
wait for nothing. The copies read the same DRAM bytes once, as the loads did (a table
several cores read is read once, not per core), at the start and in program order, ahead
of the weights.

What: every dram `.const` that only `dma`s read (not the weight image, not a table a
`gather` indexes), in declaration order while it fits in gb above every other
declaration, is copied by the last core into the region `const.gb`, in batches that double
from `FIRST_BATCH` to `BATCH` bytes. After each batch that core sends a token to every core
that reads a constant of it, which receives it before its first such read (send -> recv
orders the copies before the reads, section 6; a send waits for the core's gb writes).
Each `dma` reading a staged constant reads the same bytes of its copy. A copy carries the
source comment of its constant's first reader, so it is attributed to that graph node.

When: only if the staged bytes are at most `MAX_SHARE` of the weight image. The copies
go to the DRAM ahead of everything, which pays when the weight stream the loads would
wait behind dominates the DRAM's work, and delays the start when the constants are a
large part of it: staging lengthens the tiny zoo models (constants a fifth or more of the
image) and shortens BERT-base (a few percent). The last core copies: at equal start times
the schedule serves lower core ids first (cimc/machine/schedule.py), so the other cores'
first loads (inputs, embedding rows, first weights) go ahead of the copies. Figures and
the commands that measure them: benchmarks/FINDINGS.md, "Small constants staged in gb".
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

from cimc.backend.builder.asm import TOKEN_BYTES
from cimc.backend.stream.prefetch import IMAGES
from cimc.machine.arch import Arch
from cimc.machine.program import SENDS, CoreItem, Decl, Imm, Instr, Program, View

REGION = "const.gb"
ALIGN = 64  # bytes: every copy keeps the natural alignment of its constant's views
MAX_SHARE = 1 / 16  # staged bytes per weight-image byte, at most (see "When")
FIRST_BATCH = 2048  # bytes copied before the first tokens: the first readers wait little
BATCH = 65536  # at most, batches doubling from FIRST_BATCH (fewer tokens later on)


@dataclass(frozen=True)
class _Staged:
    decl: Decl
    addr: int  # of the copy in gb
    batch: int
    comment: str | None  # of the first reader


def stage_consts(program: Program, arch: Arch, max_share: float | None = None) -> Program:
    """`program` with its small constants read from a gb copy (see the module doc);
    `max_share` overrides `MAX_SHARE`."""
    images = [d for d in (program.decl(name) for name in IMAGES) if d is not None]
    if not images:
        return program  # no weight stream to wait behind
    staged = _placement(program, arch)
    limit = (MAX_SHARE if max_share is None else max_share) * sum(d.nbytes for d in images)
    if not staged or sum(s.decl.nbytes for s in staged.values()) > limit:
        return program
    base = min(s.addr for s in staged.values())
    end = max(s.addr + s.decl.nbytes for s in staged.values())
    region = Decl("region", REGION, "gb", base, None, 0, 0, end - base)
    copier = program.cores[-1].core
    tag = 1 + max((_tag(i) for s in program.cores for i in s.instrs), default=-1)
    token = View("sp", arch.core.scratchpad_bytes - TOKEN_BYTES, "i8", 1, 1)
    firsts = {s.core: _first_reads(s.items, staged) for s in program.cores}
    cores = []
    for stream in program.cores:
        items: list[CoreItem] = []
        if stream.core == copier:
            items += _copies(staged, firsts, copier, token, tag, base)
        tokens = Counter(() if stream.core == copier else firsts[stream.core].values())
        for k, item in enumerate(stream.items):
            recv = Instr("recv", (Imm(copier), token, Imm(tag)), _comment(item))
            items += [recv] * tokens.get(k, 0)  # one per batch whose token is due here
            items.append(_reread(item, staged, base))
        cores.append(replace(stream, items=tuple(items)))
    return replace(program, header=(*program.header, region), cores=tuple(cores))


def _placement(program: Program, arch: Arch) -> dict[str, _Staged]:
    """The staged constants (declaration order) with the gb addresses of their copies."""
    only_dma = {d.name for d in program.decls_of("const") if d.space == "dram"} - set(IMAGES)
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
    placed: dict[str, _Staged] = {}
    batch, filled = 0, 0
    for decl in program.decls_of("const"):
        if decl.name not in only_dma:
            continue
        at = addr + decl.addr % ALIGN  # same offset in a 64-byte line: views stay aligned
        if at + decl.nbytes > room:
            break  # the rest stays in dram (declaration order is roughly the order of use)
        if filled and filled + decl.nbytes > min(BATCH, FIRST_BATCH << batch):
            batch, filled = batch + 1, 0
        placed[decl.name] = _Staged(decl, at, batch, readers.get(decl.name))
        filled += decl.nbytes
        addr = _align(at + decl.nbytes)
    return placed


def _first_reads(items: tuple[CoreItem, ...], staged: dict[str, _Staged]) -> dict[int, int]:
    """Batch -> index of the stream's item before which its token is received: the first
    read of one of its constants, or earlier, before the first read of a later batch
    (tokens arrive in batch order, so by then every earlier batch is copied)."""
    first: dict[int, int] = {}
    for k, item in enumerate(items):
        src = _staged_source(item, staged)
        if src is not None:
            first.setdefault(staged[src].batch, k)
    return {b: min(at for c, at in first.items() if c >= b) for b in first}


def _copies(
    staged: dict[str, _Staged],
    firsts: dict[int, dict[int, int]],
    copier: int,
    token: View,
    tag: int,
    base: int,
) -> list[CoreItem]:
    """The copier's prologue: each batch's copies, then a token to each of its readers."""
    items: list[CoreItem] = []
    for batch in sorted({s.batch for s in staged.values()}):
        members = [s for s in staged.values() if s.batch == batch]
        for s in members:
            n = s.decl.nbytes
            dst = View("gb", s.addr, "i8", 1, n, symbol=REGION, offset=s.addr - base)
            src = View("dram", s.decl.addr, "i8", 1, n, symbol=s.decl.name)
            items.append(Instr("dma", (dst, src), s.comment))
        for core in sorted(c for c, f in firsts.items() if c != copier and batch in f):
            items.append(Instr("send", (Imm(core), token, Imm(tag)), members[0].comment))
    return items


def _staged_source(item: CoreItem, staged: dict[str, _Staged]) -> str | None:
    if isinstance(item, Instr) and item.opcode == "dma":
        src = item.operands[1]
        if isinstance(src, View) and src.symbol in staged:
            return src.symbol
    return None


def _reread(item: CoreItem, staged: dict[str, _Staged], base: int) -> CoreItem:
    """A dma reading a staged constant reads its copy (same bytes, same shape)."""
    name = _staged_source(item, staged)
    if name is None:
        return item
    assert isinstance(item, Instr)
    src = item.operands[1]
    assert isinstance(src, View)
    addr = staged[name].addr + src.addr - staged[name].decl.addr
    copy = replace(src, space="gb", addr=addr, symbol=REGION, offset=addr - base)
    return replace(item, operands=(item.operands[0], copy, *item.operands[2:]))


def _tag(instr: Instr) -> int:
    """The tag of a send, mcast or recv (-1 for other instructions)."""
    tag = instr.operands[2] if instr.opcode in (*SENDS, "recv") else None
    return tag.value if isinstance(tag, Imm) else -1


def _comment(item: CoreItem) -> str | None:
    return item.comment if isinstance(item, Instr) else None


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN
