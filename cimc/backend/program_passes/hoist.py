"""Loads from constants moved up their core's stream, so they reach the DRAM earlier.

The DRAM channel serves transfers first come first served (isa/SPEC.md, section 8) and
the weight prefetcher keeps it busy ahead of use, so a load issued late waits behind every
piece issued before it. Two kinds of loads are emitted later than they could be issued:
- a node's own constants (biases, requant multipliers, layer-norm gains, lookup tables)
  are loaded where the node is lowered, behind the weight pieces issued before them on
  the channel. They move up as far as they legally can, keeping their order (a load does
  not pass another constant load), at most `HOIST_LIMIT` instructions (a bound on the
  compile-time scan);
- a weight piece (prefetch.py) is released while some node is being lowered and lands
  after the instructions already emitted on its core, which may be a long chain of
  compute. It moves up through the one block of another node's instructions right above
  it (usually the node being lowered; its own layer's, e.g. earlier mloads, do not
  count), no further: pieces issued much earlier than the prefetcher released them
  overtake, in the first-come-first-served DRAM, the pieces needed before them. For the
  same reason a piece never passes a barrier: above it, a core that reached the barrier
  early (it had no part in the node before) would request the piece while the slower
  cores' pieces for that node are still on their way.
Pieces do not stop at every `recv`: a recv usually waits for a token of the node's own
data, which the piece must not wait for. Each rule (constants up, pieces one node block
up and not two, pieces stopped at barriers, not at recvs) was chosen by the makespan of
BERT-base on `large` against its alternative (benchmarks/FINDINGS.md, "Hoisting").

Legality: a `dma` or `gather` reading a constant, whose other operands are all in the
core's scratchpad, commutes with every earlier instruction that neither writes what it
reads nor touches what it writes: constants are never written and a scratchpad is private
to its core (no other core or sync instruction sees it). So the moved load reads and
writes the same bytes as before; only the timing changes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cimc.backend.builder.asm import views_overlap
from cimc.backend.stream.prefetch import IMAGES
from cimc.machine.opcodes import Access, spec_of
from cimc.machine.program import CoreItem, Instr, Program, View

HOIST_LIMIT = 4096  # instructions a constant load may move up (bounds the scan)
_LOADS = ("dma", "gather")


def hoist_const_loads(program: Program, limit: int = HOIST_LIMIT) -> Program:
    """`program` with every movable constant load moved up its stream (see the module doc)."""
    consts = {d.name for d in program.decls_of("const")}
    cores = tuple(
        replace(stream, items=_hoist(stream.items, consts, limit)) for stream in program.cores
    )
    return replace(program, cores=cores)


@dataclass(frozen=True)
class _Item:
    """A stream item with what the scan asks of it, computed once."""

    item: CoreItem
    load: bool  # a movable constant load
    sp: tuple[tuple[View, Access], ...]  # its scratchpad operands


def _hoist(items: tuple[CoreItem, ...], consts: set[str], limit: int) -> tuple[CoreItem, ...]:
    out: list[_Item] = []
    for item in items:
        info = _Item(item, False, ())
        if isinstance(item, Instr):
            views = spec_of(item).views(item)
            sp = tuple((v, a) for v, a in views if v.space == "sp")
            info = _Item(item, item.opcode in _LOADS and _movable(views, consts), sp)
        out.insert(_earliest(out, info, limit) if info.load else len(out), info)
    return tuple(i.item for i in out)


def _movable(views: tuple[tuple[View, Access], ...], consts: set[str]) -> bool:
    """A dma/gather reading a constant whose other operands are all in the scratchpad."""
    reads_const = any(v.symbol in consts and a == Access.READ for v, a in views)
    private = all(v.space == "sp" or (v.symbol in consts and a == Access.READ) for v, a in views)
    return reads_const and private


def _earliest(out: list[_Item], load: _Item, limit: int) -> int:
    """The earliest position in `out` the load may move to: below the last instruction that
    conflicts with it or loads a constant. A weight piece also stays below barriers and
    inside the first block of another node's instructions above it (it may pass its own
    node's: earlier mloads)."""
    instr = load.item
    assert isinstance(instr, Instr)
    piece = any(isinstance(v, View) and v.symbol in IMAGES for v in instr.operands)
    writes = [v for v, a in load.sp if a != Access.READ]
    reads = [v for v, a in load.sp if a == Access.READ]
    at, seen, block, blocks = len(out), 0, instr.comment, 0
    while at > 0 and seen < limit:
        prev = out[at - 1]
        if isinstance(prev.item, Instr):
            if prev.load:
                return at  # loads keep their order: the DRAM serves them as needed
            if piece and prev.item.opcode == "barrier":
                return at  # issued after the barrier: in time order with the other cores
            if piece and prev.item.comment != block:  # the comment names the node
                block, blocks = prev.item.comment, blocks + 1
                if blocks > 1:
                    return at
            for view, access in prev.sp:
                if any(views_overlap(view, w) for w in writes):
                    return at
                if access != Access.READ and any(views_overlap(view, r) for r in reads):
                    return at
            seen += 1
        at -= 1
    return at
