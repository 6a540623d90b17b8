"""Static analysis of the synchronisation skeleton: send/recv matching, deadlock, races.

All addresses and all sync instructions are static, so the validator can decide before
running: every send meets exactly one recv (FIFO per (source, destination, tag)), the
cores cannot deadlock, and no two cores touch overlapping gb/dram bytes (one of them
writing) unless a barrier or a send/recv chain orders them. Ordering is computed with
vector clocks over one simulated execution of the skeleton; any interleaving gives the
same clocks because matching is fixed by FIFO order.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from cimc.errors import CimcError
from cimc.machine.opcodes import spec_of
from cimc.machine.program import SENDS, Imm, Instr, Program, View, destinations

Site = tuple[int, int]  # (core id, index in that core's instruction list)


@dataclass(frozen=True)
class Access:
    """One gb/dram access: who, where in the stream, what bytes, and what it had seen."""

    core: int
    index: int
    instr: Instr
    view: View
    write: bool
    clock: tuple[int, ...]  # vector clock right after the instruction
    # Barriers the core passed before it. Every core passes every barrier, so accesses of
    # different epochs are ordered: only equal epochs can race (0 everywhere is also sound).
    epoch: int = 0


def _err(
    program: Program, core: int, instr: Instr, message: str, col: int | None = None
) -> CimcError:
    return CimcError(f"core {core}: {message}", program.loc(instr, col))


def _imm(instr: Instr, i: int) -> int:
    op = instr.operands[i]
    assert isinstance(op, Imm)
    return op.value


def _view(instr: Instr, i: int) -> View:
    op = instr.operands[i]
    assert isinstance(op, View)
    return op


def match_messages(program: Program) -> dict[Site, Site]:
    """Pair every recv with its send (FIFO per (src, dst, tag)); returns recv site -> send site.

    Raises CimcError at the first unmatched send or recv, or at a recv whose dtype or shape
    differs from its send's.
    """
    sends: dict[tuple[int, int, int], list[Site]] = {}
    recvs: dict[tuple[int, int, int], list[Site]] = {}
    for stream in program.cores:
        for i, instr in enumerate(stream.instrs):
            if instr.opcode in SENDS:
                for peer in destinations(instr):
                    key = (stream.core, peer, _imm(instr, 2))
                    sends.setdefault(key, []).append((stream.core, i))
            elif instr.opcode == "recv":
                key = (_imm(instr, 0), stream.core, _imm(instr, 2))
                recvs.setdefault(key, []).append((stream.core, i))
    pairs: dict[Site, Site] = {}
    for key in sorted(set(sends) | set(recvs)):
        s_list, r_list = sends.get(key, []), recvs.get(key, [])
        for send, recv in zip(s_list, r_list, strict=False):
            _check_pair(program, send, recv)
            pairs[recv] = send
    _check_unmatched(program, sends, recvs)
    return pairs


def _instr(program: Program, site: Site) -> Instr:
    return program.instrs(site[0])[site[1]]


def _check_pair(program: Program, send: Site, recv: Site) -> None:
    s, r = _instr(program, send), _instr(program, recv)
    sv, rv = _view(s, 1), _view(r, 1)
    if (sv.dtype, sv.shape) != (rv.dtype, rv.shape):
        got = f"{rv.dtype}[{rv.rows}x{rv.cols}]"
        sent = f"{sv.dtype}[{sv.rows}x{sv.cols}]"
        raise _err(
            program,
            recv[0],
            r,
            f"recv of {got} from core {send[0]} tag {_imm(r, 2)} does not match the {sent} "
            f"sent at line {s.line}; make the two views agree",
            r.operand_col(1),
        )


def _check_unmatched(
    program: Program,
    sends: dict[tuple[int, int, int], list[Site]],
    recvs: dict[tuple[int, int, int], list[Site]],
) -> None:
    extra: list[tuple[Site, str]] = []
    for key in set(sends) | set(recvs):
        src, dst, tag = key
        s_list, r_list = sends.get(key, []), recvs.get(key, [])
        for site in s_list[len(r_list) :]:
            op = _instr(program, site).opcode
            extra.append((site, f"{op} to core {dst} tag {tag} has no matching recv on core {dst}"))
        for site in r_list[len(s_list) :]:
            message = f"recv from core {src} tag {tag} has no matching send or mcast on core {src}"
            extra.append((site, message))
    if extra:
        site, message = min(extra)
        raise _err(program, site[0], _instr(program, site), message + "; add it or remove this one")


def check_barrier_counts(program: Program) -> None:
    """Every core passes the same number of barriers (else the others wait forever)."""
    counts = {s.core: sum(i.opcode == "barrier" for i in s.instrs) for s in program.cores}
    most = max(counts.values(), default=0)
    for stream in program.cores:
        if counts[stream.core] < most and stream.instrs:
            owner = max(counts, key=lambda c: (counts[c], -c))
            raise _err(
                program,
                stream.core,
                stream.instrs[-1],
                f"reaches {counts[stream.core]} barrier(s) but core {owner} reaches {most}; "
                f"every core must reach every barrier",
            )


class _Skeleton:
    """One deterministic round-robin run of the sync instructions, recording clocks."""

    def __init__(self, program: Program, pairs: dict[Site, Site]) -> None:
        self.program = program
        self.pairs = pairs
        self.cores = [s.core for s in program.cores]
        self.streams = {s.core: s.instrs for s in program.cores}
        width = max(self.cores, default=-1) + 1
        self.clock = {c: [0] * width for c in self.cores}
        self.pc = dict.fromkeys(self.cores, 0)
        self.sent: dict[Site, tuple[int, ...]] = {}
        self.at_barrier: set[int] = set()
        self.epoch = dict.fromkeys(self.cores, 0)
        self.accesses: list[Access] = []

    def run(self) -> list[Access]:
        live = [c for c in self.cores if self.streams[c]]
        while live:
            progressed = [self._run_core(core) for core in live]
            released = self._release_barrier(live)
            if not any(progressed) and not released:
                raise self._deadlock(live)
            live = [c for c in live if self.pc[c] < len(self.streams[c])]
        return self.accesses

    def _run_core(self, core: int) -> bool:
        progressed = False
        stream = self.streams[core]
        while self.pc[core] < len(stream) and core not in self.at_barrier:
            index = self.pc[core]
            instr = stream[index]
            if instr.opcode == "recv":
                send = self.pairs[(core, index)]
                if send not in self.sent:
                    break
                self.clock[core] = [
                    max(a, b) for a, b in zip(self.clock[core], self.sent[send], strict=True)
                ]
            self.clock[core][core] = index + 1
            if instr.opcode == "barrier":
                self.at_barrier.add(core)
                self.epoch[core] += 1
            elif instr.opcode in SENDS:
                self.sent[(core, index)] = tuple(self.clock[core])
            self._record(core, index, instr)
            self.pc[core] = index + 1
            progressed = True
        return progressed

    def _record(self, core: int, index: int, instr: Instr) -> None:
        spec = spec_of(instr)
        clock = tuple(self.clock[core])
        for view, access in spec.views(instr):
            if view.space in ("gb", "dram"):
                write = access.value != "r"
                epoch = self.epoch[core]
                self.accesses.append(Access(core, index, instr, view, write, clock, epoch))

    def _release_barrier(self, live: list[int]) -> bool:
        if not self.at_barrier or len(self.at_barrier) < len(live):
            return False
        merged = [max(col) for col in zip(*(self.clock[c] for c in live), strict=True)]
        for c in live:
            self.clock[c] = list(merged)
        self.at_barrier.clear()
        return True

    def _deadlock(self, live: list[int]) -> CimcError:
        waits = []
        for c in live:
            instr = self.streams[c][self.pc[c] - 1 if c in self.at_barrier else self.pc[c]]
            what = "barrier" if c in self.at_barrier else _waits_for(instr)
            waits.append(f"core {c} waits at line {instr.line} ({what})")
        first = live[0]
        stuck = self.streams[first][
            self.pc[first] - 1 if first in self.at_barrier else self.pc[first]
        ]
        return _err(self.program, first, stuck, "deadlock: " + ", ".join(waits))


def _waits_for(recv: Instr) -> str:
    return f"recv from core {_imm(recv, 0)} tag {_imm(recv, 2)}"


def happens_before(a: Access, b: Access) -> bool:
    return b.clock[a.core] >= a.index + 1


def _rows(v: View) -> tuple[int, int, int]:
    """(row step in bytes, bytes per row, row count), a contiguous view as one long row."""
    row = v.cols * v.elem_bytes
    if v.stride == v.cols or v.rows == 1:
        return (row * v.rows, row * v.rows, 1)
    return (v.stride * v.elem_bytes, row, v.rows)


def bytes_overlap(a: View, b: View) -> bool:
    """Exact test: do the rows of two (possibly strided) views share a byte?

    Row r of a is [a0 + r*s, a0 + r*s + la); with one common step s (or a single row on
    one side), rows r and q meet iff -la < (a0 - b0) + (r - q)*s < lb: a bound on t = r - q,
    decided in O(1). Other stride pairs: for each row of the view with fewer rows, the first
    row of the other that ends after it starts is the only candidate, in O(1)."""
    if a.space != b.space or a.addr >= b.end or b.addr >= a.end:
        return False
    (sa, la, na), (sb, lb, nb) = _rows(a), _rows(b)
    if na == 1 or nb == 1 or sa == sb:
        step = sb if na == 1 else sa
        d = a.addr - b.addr
        t_lo = max(-(nb - 1), (-la - d) // step + 1)  # smallest t with t*step > -la - d
        t_hi = min(na - 1, -((d - lb) // step) - 1)  # largest t with t*step < lb - d
        return t_lo <= t_hi
    if na > nb:  # loop over the side with fewer rows
        (a, sa, la, na), (b, sb, lb, nb) = (b, sb, lb, nb), (a, sa, la, na)
    for r in range(na):  # rows q of b meeting [lo, hi): b0 + q*sb < hi and b0 + q*sb + lb > lo
        lo = a.addr + r * sa - b.addr
        q = max(0, (lo - lb) // sb + 1)
        if q < nb and q * sb < lo + la:
            return True
    return False


def find_race(accesses: list[Access]) -> tuple[Access, Access] | None:
    """First unordered pair of overlapping accesses by two cores with a write among them,
    or None when race-free.

    Along one core's stream both `b.index` and `b.clock[j]` grow, so the accesses of core i
    unordered with an access `a` of core j form one contiguous slice, found by bisection.
    Only the accesses of that slice sharing an address block with `a` are compared byte by
    byte (`_BlockIndex`), and only cores that touch those blocks are looked at, so a long
    barrier epoch on many cores costs n log n, not n^2. The pair found is the first in
    (core of a, a, core of b, b) order, as a plain scan of all pairs would find it. A
    race-free program, what the compiler emits, is settled first by `_race_free` in one
    linear pass: this search runs only to name the pair of a racy one.
    """
    block = _block_size(accesses) if accesses else 64
    if _race_free(accesses, block):
        return None
    by_core: dict[int, list[Access]] = {}
    for acc in accesses:
        by_core.setdefault(acc.core, []).append(acc)
    cores = sorted(by_core)
    index = _BlockIndex(by_core, cores, block)
    stream_index = {c: [b.index for b in by_core[c]] for c in cores}
    seen: dict[tuple[int, int], list[int]] = {}  # (i, j) -> clock[j] of core i's accesses

    def window(a: Access, i: int) -> tuple[int, int]:
        """Positions of core i's accesses unordered with a: [lo, hi)."""
        clocks = seen.get((i, a.core))
        if clocks is None:  # built on first use: most core pairs never share a block
            clocks = seen[(i, a.core)] = [b.clock[a.core] for b in by_core[i]]
        lo = bisect.bisect_left(stream_index[i], a.clock[i])
        return lo, bisect.bisect_left(clocks, a.index + 1, lo)

    for j in cores:
        for a in by_core[j]:
            hit = index.first_conflict(a, window)
            if hit is not None:
                return a, by_core[hit[0]][hit[1]]
    return None


RACE_FREE_COMPACT_MIN = 4096  # index entries recorded between two compactions, at least


def _race_free(accesses: list[Access], block: int) -> bool:
    """Whether no two accesses race, in one pass in execution order.

    Why not find_race's search alone: it goes through every core that touched a block in
    the epoch, and a program without barriers (BERT-base on `large` has none) reuses its
    gb/dram blocks layer after layer on every core, so each access went through ever more
    cores. Here the accesses are taken in an order consistent with happens-before
    (ascending sum of the clock), so an earlier access b is unordered with a later x exactly
    when x has not seen it (b.index >= x.clock[b.core]), and b is dropped once the next
    access of every other core has seen it: no later access can race with it. The index is
    compacted whenever it has doubled, which keeps the pass linear; its keys are
    find_race's (space, block, epoch), reads looking at writes only."""
    order = sorted(accesses, key=lambda a: sum(a.clock))  # stable: a core's in index order
    by_core: dict[int, list[Access]] = {}
    for acc in order:
        by_core.setdefault(acc.core, []).append(acc)
    done = dict.fromkeys(by_core, 0)  # accesses of each core taken so far
    every: _Pending = {}  # key -> core -> its accesses not yet seen by every other core
    writes: _Pending = {}
    entries, compact_at = 0, RACE_FREE_COMPACT_MIN
    for x in order:
        keys = _block_keys(x, block)
        checked: set[int] = set()  # an access spanning several blocks: compared once
        for key in keys:
            for core, table in (every if x.write else writes).get(key, {}).items():
                start = x.clock[core]
                if core == x.core or table[-1].index < start:
                    continue  # all seen by x
                for b in table[bisect.bisect_left(table, start, key=_INDEX) :]:
                    if id(b) not in checked:
                        checked.add(id(b))
                        if bytes_overlap(x.view, b.view):
                            return False
        done[x.core] += 1
        for key in keys:
            for blocks in (every, writes) if x.write else (every,):
                blocks.setdefault(key, {}).setdefault(x.core, []).append(x)
                entries += 1
        if entries >= compact_at:
            entries = _drop_seen_by_all((every, writes), by_core, done)
            compact_at = max(2 * entries, RACE_FREE_COMPACT_MIN)
    return True


_Pending = dict[tuple[str, int, int], dict[int, list[Access]]]
_INDEX = attrgetter("index")


def _drop_seen_by_all(
    tables: tuple[_Pending, ...], by_core: dict[int, list[Access]], done: dict[int, int]
) -> int:
    """Drop the accesses that the next access of every other core has seen; the entries
    left."""
    nexts = [by_core[c][n] for c, n in done.items() if n < len(by_core[c])]
    floor = {i: min((a.clock[i] for a in nexts if a.core != i), default=1 << 62) for i in by_core}
    left = 0
    for blocks in tables:
        for key in list(blocks):
            table_of = blocks[key]
            for core in list(table_of):
                table = table_of[core]
                del table[: bisect.bisect_left(table, floor[core], key=_INDEX)]
                if table:
                    left += len(table)
                else:
                    del table_of[core]
            if not table_of:
                del blocks[key]
    return left


def _block_size(accesses: list[Access]) -> int:
    """The smallest power-of-two block (>= 64 bytes) whose index holds at most a few entries
    per access: large views then span few blocks, small ones share few."""
    starts = np.array([a.view.addr for a in accesses], dtype=np.int64)
    lasts = np.array([a.view.end - 1 for a in accesses], dtype=np.int64)
    block, limit = 64, 4 * len(accesses) + 1024
    while int((lasts // block - starts // block + 1).sum()) > limit:
        block *= 2
    return block


Blocks = dict[tuple[str, int, int], dict[int, list[int]]]


class _BlockIndex:
    """Every core's accesses by (space, address block, epoch), then by core (ascending):
    their ascending positions in the core's list. Writes are also indexed alone: a read
    races only with writes, and a block read by every core is usually written by one."""

    def __init__(self, by_core: dict[int, list[Access]], cores: list[int], block: int) -> None:
        self.by_core, self.block = by_core, block
        self.all: Blocks = {}
        self.writes: Blocks = {}
        for core in cores:
            for pos, acc in enumerate(by_core[core]):
                for key in self.keys(acc):
                    self.all.setdefault(key, {}).setdefault(core, []).append(pos)
                    if acc.write:
                        self.writes.setdefault(key, {}).setdefault(core, []).append(pos)

    def keys(self, acc: Access) -> list[tuple[str, int, int]]:
        return _block_keys(acc, self.block)

    def first_conflict(
        self, a: Access, window: Callable[[Access, int], tuple[int, int]]
    ) -> tuple[int, int] | None:
        """(core, position) of the first access unordered with `a` (its `window` on that
        core) that shares a byte with it, one of the two writing; None when there is none."""
        best: dict[int, int] = {}  # core -> smallest conflicting position so far
        windows: dict[int, tuple[int, int]] = {}
        checked: set[tuple[int, int]] = set()  # accesses spanning several blocks: once
        blocks = self.all if a.write else self.writes
        for key in self.keys(a):
            for core, table in blocks.get(key, {}).items():
                if core == a.core:
                    continue
                if core not in windows:
                    windows[core] = window(a, core)
                lo, hi = windows[core]
                at = bisect.bisect_left(table, lo)
                stop = min(hi, best.get(core, hi))
                while at < len(table) and table[at] < stop:
                    pos = table[at]
                    if (core, pos) not in checked:
                        checked.add((core, pos))
                        if bytes_overlap(a.view, self.by_core[core][pos].view):
                            best[core] = pos
                            break
                    at += 1
        return min(best.items()) if best else None


def _block_keys(acc: Access, block: int) -> list[tuple[str, int, int]]:
    """(space, block, epoch) of every block the access's view spans."""
    view = acc.view
    last = view.addr + ((view.rows - 1) * view.stride + view.cols) * view.elem_bytes - 1
    first, stop = view.addr // block, last // block + 1
    return [(view.space, k, acc.epoch) for k in range(first, stop)]


def _without_constant_reads(program: Program, accesses: list[Access]) -> list[Access]:
    """Drop reads that lie inside a `.const`: they race only with a write to that constant,
    and when no access writes into a constant (the validator rejects such writes before
    this check) there is none. Weight reads are most accesses of a large model."""
    consts: dict[str, list[tuple[int, int]]] = {}  # per space: disjoint merged byte ranges
    for d in sorted(program.decls_of("const"), key=lambda d: (d.space, d.addr)):
        spans = consts.setdefault(d.space, [])
        if spans and d.addr <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], d.end))
        else:
            spans.append((d.addr, d.end))

    def inside(view: View) -> tuple[int, int] | None:
        spans = consts.get(view.space, [])
        k = bisect.bisect_right(spans, (view.addr, float("inf"))) - 1
        return spans[k] if k >= 0 and spans[k][1] > view.addr else None

    def touches_const(view: View) -> bool:
        spans = consts.get(view.space, [])
        k = bisect.bisect_left(spans, (view.end,)) - 1  # the last constant starting before end
        return k >= 0 and spans[k][1] > view.addr

    if not consts or any(a.write and touches_const(a.view) for a in accesses):
        return accesses
    kept = []
    for a in accesses:
        span = None if a.write else inside(a.view)
        if span is None or a.view.end > span[1]:
            kept.append(a)
    return kept


def _describe(acc: Access) -> str:
    kind = "write" if acc.write else "read"
    return f"{acc.view.space} {kind} [{acc.view.addr:#x}, {acc.view.end:#x})"


def check_sync(program: Program) -> None:
    """Matching, barrier counts, deadlock freedom and race freedom, in that order."""
    pairs = match_messages(program)
    check_barrier_counts(program)
    race = find_race(_without_constant_reads(program, _Skeleton(program, pairs).run()))
    if race is not None:
        a, b = sorted(race, key=lambda x: (x.instr.line, x.core))
        raise _err(
            program,
            b.core,
            b.instr,
            f"{_describe(b)} races with core {a.core}'s {_describe(a)} at line {a.instr.line}; "
            f"order them with a barrier or a send/recv",
        )


_bytes_overlap = bytes_overlap  # the fuzz harness's name for it
