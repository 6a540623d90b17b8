"""Consecutive sends of one buffer from one core become one `mcast` (a peephole pass).

The shared-access ordering (cimc/backend/builder/shared_order.py) sends a sync token to
every core that next reads what a core wrote. When many cores read it in turn (every core
of a layer reading the rows one core wrote), the writer's stream gets a run of `send`s of
its token byte with nothing between them. One `mcast` to the same cores is the same fence
at the same point of the stream (the sends in between ran nothing else) and delivers the
same bytes; it holds the NoC port once over the XY tree instead of once per destination,
and is one instruction instead of many (most token sends of BERT-base merge:
benchmarks/FINDINGS.md, "Sends merged into mcasts"). Data sends of one buffer in a row
merge the same way.

Each merged send's recv is re-tagged with the mcast's tag, chosen fresh for every pair it
serves: a tag identifies one message per (source, destination), so the program reads the
same as one the builder emitted with `ProgramBuilder.multicast`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from cimc.machine.program import CoreItem, CoreSet, CoreStream, Imm, Instr, Program, destinations
from cimc.machine.shape_rules import TAG_MAX
from cimc.machine.sync import Site, match_messages

Pair = tuple[int, int]  # (source core, destination core)


def merge_sends(program: Program) -> Program:
    """`program` with every run of two or more mergeable sends replaced by one mcast."""
    pairs = match_messages(program)  # recv site -> send site
    recv_of = {(send, recv[0]): recv for recv, send in pairs.items()}  # (send, dest) -> recv
    used = _tags_in_use(program)
    replaced: dict[Site, Instr | None] = {}  # site -> its mcast (first of a run) or None
    for stream in program.cores:
        for run in _runs(stream.items):
            mcast = _merged(program, stream.core, run, recv_of, used, replaced)
            if mcast is not None:
                replaced[(stream.core, run[0][0])] = mcast
                replaced.update(((stream.core, i), None) for i, _ in run[1:])
    return replace(program, cores=tuple(_rewritten(s, replaced) for s in program.cores))


def _runs(items: tuple[CoreItem, ...]) -> list[list[tuple[int, Instr]]]:
    """Runs of two or more sends of one buffer to different cores, nothing between them
    (not even a comment); as (instruction index, send) lists."""
    runs: list[list[tuple[int, Instr]]] = []
    run: list[tuple[int, Instr]] = []
    index = 0
    for item in items:
        if not (isinstance(item, Instr) and _extends(run, item)):
            if len(run) > 1:
                runs.append(run)
            run = []
        if isinstance(item, Instr):
            if item.opcode == "send":
                run.append((index, item))
            index += 1
    if len(run) > 1:
        runs.append(run)
    return runs


def _extends(run: list[tuple[int, Instr]], instr: Instr) -> bool:
    """Does `instr` continue the run: a send of the same buffer to a core not yet in it?"""
    if not run or instr.opcode != "send":
        return False
    return instr.operands[1] == run[0][1].operands[1] and all(
        s.operands[0] != instr.operands[0] for _, s in run
    )


def _merged(
    program: Program,
    core: int,
    run: list[tuple[int, Instr]],
    recv_of: dict[tuple[Site, int], Site],
    used: dict[Pair, Counter[int]],
    replaced: dict[Site, Instr | None],
) -> Instr | None:
    """The run's mcast (None: no tag is free for every pair), its recvs re-tagged."""
    dests = [_imm(s.operands[0]) for _, s in run]
    old = [_imm(s.operands[2]) for _, s in run]
    tag = _common_tag([(core, d) for d in dests], old, used)
    if tag is None:
        return None
    for dest, old_tag in zip(dests, old, strict=True):
        used[(core, dest)][old_tag] -= 1
        used[(core, dest)][tag] += 1
    for (index, _), dest in zip(run, dests, strict=True):
        site = recv_of[((core, index), dest)]
        recv = replaced.get(site) or program.instrs(site[0])[site[1]]
        replaced[site] = replace(recv, operands=(*recv.operands[:2], Imm(tag)))
    first = run[0][1]
    peers = CoreSet(tuple(sorted(dests)))
    return Instr("mcast", (peers, *first.operands[1:2], Imm(tag)), first.comment)


def _common_tag(pairs: list[Pair], old: list[int], used: dict[Pair, Counter[int]]) -> int | None:
    """A tag no other message of any of the pairs uses: one of the sends' own tags when it
    is free for all, else one past the largest in use, else the smallest free one."""

    def free(tag: int) -> bool:  # no message of any pair but the merged ones uses it
        return all(used[p][tag] == (tag == own) for p, own in zip(pairs, old, strict=True))

    for tag in old:
        if free(tag):
            return tag
    above = max(max(t for t, n in used[p].items() if n) for p in pairs) + 1
    if above <= TAG_MAX:
        return above
    return next((t for t in range(TAG_MAX + 1) if free(t)), None)


def _tags_in_use(program: Program) -> dict[Pair, Counter[int]]:
    """Messages per tag of every (source, destination) pair."""
    used: dict[Pair, Counter[int]] = {}
    for stream in program.cores:
        for instr in stream.instrs:
            for d in destinations(instr):  # empty for anything but send / mcast
                used.setdefault((stream.core, d), Counter())[_imm(instr.operands[2])] += 1
    return used


def _rewritten(stream: CoreStream, replaced: dict[Site, Instr | None]) -> CoreStream:
    items: list[CoreItem] = []
    index = 0
    for item in stream.items:
        if isinstance(item, Instr):
            site = (stream.core, index)
            index += 1
            if site in replaced:
                new = replaced[site]
                if new is not None:
                    items.append(new)
                continue
        items.append(item)
    return replace(stream, items=tuple(items))


def _imm(op: object) -> int:
    assert isinstance(op, Imm)
    return op.value
