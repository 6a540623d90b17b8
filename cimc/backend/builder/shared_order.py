"""Ordering of cross-core gb/dram accesses for the program builder (cimc/backend/builder/asm.py).

Lowerings spread work over cores and exchange data through gb/dram. Before each
instruction the builder asks `SharedOrder` whether it touches bytes another core touched
(one of the two writing) without the two being ordered yet, and if so orders them:

- with a token: the other core `send`s one byte to this core at the end of its stream,
  this core `recv`s it before the instruction. A send is a fence for gb/dram (isa/SPEC.md
  section 8) and send -> recv is happens-before for the validator (section 6), so only
  the two cores wait for each other, not the whole chip;
- with a barrier on every active core when this core conflicts with every other one (a
  layer that reads what all cores wrote): one instruction per core instead of a token
  from each of them, and the same waiting. Not when a lowering spreads over a group of
  the cores only (a pipeline stage, `ProgramBuilder.on_cores`) while cores outside it are
  active: those run other stages, which a barrier would hold back to this point (their
  next micro-batch waiting for this stage), so the conflicting cores get tokens instead.

What each core has seen of the others is a vector clock over stream positions (as the
validator's race check computes it, cimc/machine/sync.py), so a token already received,
directly or through a third core, is not sent again. The touches are indexed by (space,
4 KiB block, is a write) and then core, in stream order: a check bisects to the touches
not yet ordered before this core and compares bytes only with those.

Why the index is compacted: a program may pass no barrier at all (BERT-base on `large`
has none), and gb/dram addresses are reused layer after layer, so without it every block
would keep every core that ever touched it and each check would go through them all: the
cost per check grew with the program (benchmarks/FINDINGS.md, "Cross-core ordering
index"). A touch already ordered before every other core cannot conflict again, and
those are nearly all of them in such a program: they are dropped whenever the index has
doubled since the last compaction, which keeps the cost linear in the touches.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Protocol

import numpy as np

from cimc.machine.opcodes import opspec
from cimc.machine.program import Imm, Instr, View
from cimc.machine.sync import bytes_overlap


class Streams(Protocol):
    """What the ordering needs of the program builder (cimc/backend/builder/asm.py)."""

    consts: dict[str, np.ndarray]  # read-only data: never a conflict
    chip_cores: tuple[int, ...]  # every core that may touch shared memory
    cores: tuple[int, ...]  # the cores the current lowering spreads over (a stage's)

    def position(self, core: int) -> int: ...
    def active_cores(self) -> list[int]: ...
    def append(self, core: int, instr: Instr) -> None: ...
    def token_view(self, core: int) -> View: ...
    def barrier(self) -> None: ...


BLOCK_SHIFT = 12  # 4 KiB index blocks
POS = attrgetter("pos")
COMPACT_MIN = 4096  # index entries recorded between two compactions, at least


@dataclass(frozen=True)
class Touch:
    core: int
    pos: int  # index of the instruction in its core's item list
    view: View
    write: bool


class SharedOrder:
    """Per builder: the gb/dram touches since the last barrier and the cores' clocks."""

    def __init__(self, b: Streams, new_tag: Callable[[int, int], int]) -> None:
        self.b = b
        self.new_tag = new_tag
        self.blocks: dict[tuple[str, int, bool], dict[int, list[Touch]]] = {}
        self.seen: dict[int, dict[int, int]] = {}  # core -> other core -> positions ordered
        self.pairs = 0
        self.entries = 0  # touches in self.blocks, counted once per block and key
        self.compact_at = COMPACT_MIN

    def before(self, core: int, instr: Instr) -> None:
        """Order `instr` (about to be appended on `core`) after the conflicting touches."""
        mine = self._touches(core, instr)
        if not mine:
            return
        at = self.b.position(core)
        others = self._conflicts(mine)
        active = set(self.b.active_cores()) - {core}
        if others and others == active and len(active) > 1 and active <= set(self.b.cores):
            self.b.barrier()  # everyone conflicts: one barrier is cheaper than the tokens
        else:
            for other in sorted(others):
                if self._unordered(mine, other):  # a previous token may have covered it
                    self._token(other, core)
        if self.b.position(core) != at:  # a recv was added: the touches come after it
            mine = self._touches(core, instr)
        self._record(mine)

    def cleared(self) -> None:
        """A barrier on every core: everything before it is ordered."""
        self.blocks.clear()
        self.entries, self.compact_at = 0, COMPACT_MIN
        ends = {c: self.b.position(c) for c in self.b.active_cores()}
        for c in ends:
            self.seen[c] = dict(ends)

    # ---------------------------------------------------------------- internals
    def _touches(self, core: int, instr: Instr) -> list[Touch]:
        pos = self.b.position(core)
        return [
            Touch(core, pos, v, a.value != "r")
            for v, a in opspec(instr.opcode).views(instr)
            if v.space in ("gb", "dram") and v.symbol not in self.b.consts  # consts: read-only
        ]

    def _unordered_touches(self, t: Touch) -> dict[int, list[Touch]]:
        """Other core -> its touches sharing a block with t and not yet ordered before t's
        core, each once (a view spanning several blocks meets the same touch in each)."""
        seen = self.seen.get(t.core, {})
        out: dict[int, dict[int, Touch]] = {}
        for k in range(t.view.addr >> BLOCK_SHIFT, ((t.view.end - 1) >> BLOCK_SHIFT) + 1):
            block = self.blocks.get((t.view.space, k, not t.write), {})  # read: writes only
            for other, touches in block.items():
                start = seen.get(other, 0)
                if other == t.core or touches[-1].pos < start:
                    continue  # all ordered before t's core (most, in a long program)
                lo = 0 if touches[0].pos >= start else bisect.bisect_left(touches, start, key=POS)
                found = out.setdefault(other, {})
                for o in touches[lo:]:
                    found[id(o)] = o
        return {other: list(found.values()) for other, found in out.items()}

    def _conflicts(self, mine: list[Touch]) -> set[int]:
        found: set[int] = set()
        for t in mine:
            for other, touches in self._unordered_touches(t).items():
                if other not in found and any(bytes_overlap(o.view, t.view) for o in touches):
                    found.add(other)
        return found

    def _unordered(self, mine: list[Touch], other: int) -> bool:
        return any(
            bytes_overlap(x.view, t.view)
            for t in mine
            for x in self._unordered_touches(t).get(other, ())
        )

    def _token(self, src: int, dst: int) -> None:
        """`src` sends a token at the end of its stream; `dst` receives it now."""
        tag = self.new_tag(src, dst)
        sent = dict(self.seen.get(src, {}))
        sent[src] = self.b.position(src) + 1  # up to the send (hooks may append after it)
        self.b.append(src, Instr("send", (Imm(dst), self.b.token_view(src), Imm(tag))))
        self.b.append(dst, Instr("recv", (Imm(src), self.b.token_view(dst), Imm(tag))))
        mine = self.seen.setdefault(dst, {})
        for c, n in sent.items():
            mine[c] = max(mine.get(c, 0), n)
        self.pairs += 1

    def _record(self, mine: list[Touch]) -> None:
        for t in mine:
            for k in range(t.view.addr >> BLOCK_SHIFT, ((t.view.end - 1) >> BLOCK_SHIFT) + 1):
                for write in {False, t.write}:  # key False: every touch; True: writes
                    by_core = self.blocks.setdefault((t.view.space, k, write), {})
                    by_core.setdefault(t.core, []).append(t)
                    self.entries += 1
        if self.entries >= self.compact_at:
            self._compact()

    def _compact(self) -> None:
        """Drop the touches already ordered before every other core: no check can find
        them again (clocks only grow), and without a barrier they would pile up, every
        check going through the cores that ever touched its blocks. Run when the index
        has doubled since the last compaction, so its cost is linear in the touches."""
        floor = {
            j: min((self.seen.get(c, {}).get(j, 0) for c in self.b.chip_cores if c != j), default=0)
            for j in self.b.chip_cores
        }
        self.entries = 0
        for key in list(self.blocks):
            by_core = self.blocks[key]
            for core in list(by_core):
                touches = by_core[core]
                del touches[: bisect.bisect_left(touches, floor[core], key=POS)]
                if touches:
                    self.entries += len(touches)
                else:
                    del by_core[core]
            if not by_core:
                del self.blocks[key]
        self.compact_at = max(2 * self.entries, COMPACT_MIN)
