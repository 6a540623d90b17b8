"""Fan-out of one shared-memory block to the scratchpads of several cores.

Why: the global-buffer (and DRAM) port is chip-wide, and a DMA that crosses the NoC holds
it for `bytes / link` cycles, so N cores each loading the same activation rows (the x of a
matmul whose column tiles sit on N cores, a per-channel constant of a row-wise op) cost N
times the port. One core loads the block instead and the copies travel core to core over
the NoC in a doubling tree (every core holding the block sends it to one more per round):
the port is held once and the latency is ceil(log2 N) sends. The cost model decides
(`tree_pays`); when the tree would be slower the cores load their own copy as before.

Senders must wait for the block before they can forward it, so a caller with idle cores
may pass them as relays: they take the sending rounds and every destination only
receives, free to start its own work (a matmul's weight loads) at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from cimc.backend.asm import ProgramBuilder
from cimc.backend.asm_alloc import split_even, sub
from cimc.machine.arch import Arch
from cimc.machine.cost import transfer
from cimc.machine.program import View


def send_cycles(arch: Arch, nbytes: int, src: int, dst: int) -> int:
    """Cycles of a `send` of `nbytes` from core src to dst (isa/SPEC.md, cost model)."""
    link = math.ceil(nbytes * 8 / arch.chip.noc_bits_per_cycle)
    return max(1, link + arch.hops(src, dst) * arch.chip.noc_hop_cycles)


def tree_pays(arch: Arch, src: View, dests: Sequence[int], relays: int = 0) -> bool:
    """Is one load plus forwarding over the NoC (a doubling tree, or the relay chain when
    there are `relays` for every destination) no slower than one load per destination?

    Per-core loads serialize on the shared port (the last copy lands after the sum of the
    data phases); forwarding costs `travel_cycles` (the core order keeps hops short)."""
    if len(dests) < 2 or src.space not in ("gb", "dram", "flash"):
        return False
    loads = [transfer(src.space, "sp", src.nbytes, c, arch) for c in dests]
    direct = sum(t.data_cycles for t in loads) + min(t.lead for t in loads)
    return travel_cycles(arch, src, len(dests), relays) <= direct


def relays_needed(dests: int) -> int:
    """Helper cores that make every one of `dests` destinations only receive: one per
    destination for the pipelined chain (`_chain`)."""
    return dests


def tree_order(arch: Arch, cores: Sequence[int], relays: Sequence[int] = ()) -> list[int]:
    """The relays then the cores; the one nearest the memory port first (it loads), the
    rest by core id. Senders are a prefix of the order, so relays send first."""
    pool = list(relays) or list(cores)
    first = min(pool, key=lambda c: (arch.memory_hops(c), c))
    rest = sorted(c for c in relays if c != first)
    return [first, *rest, *sorted(c for c in cores if c != first)]


def tree_pairs(
    arch: Arch, src: View, cores: Sequence[int], relays: Sequence[int] = ()
) -> list[tuple[int, int]] | None:
    """The (sender, receiver) sends of the doubling tree in emission order (the first
    core of `tree_order` loads), or None when one load per core is cheaper."""
    if not tree_pays(arch, src, sorted(cores), len(relays)):
        return None
    order = tree_order(arch, cores, relays)
    pairs: list[tuple[int, int]] = []
    have = 1
    while have < len(order):  # a round: holder i sends to holder i + have
        pairs.extend((order[i], order[i + have]) for i in range(min(have, len(order) - have)))
        have *= 2
    return pairs


def senders(arch: Arch, src: View, cores: Sequence[int], relays: Sequence[int] = ()) -> set[int]:
    """The cores among `cores` that load or forward (the others only receive)."""
    pairs = tree_pairs(arch, src, cores, relays)
    if pairs is None:
        return set(cores)
    if len(relays) >= len(cores):
        return set()  # the chain: relays do all the sending
    busy = {tree_order(arch, cores, relays)[0]} | {s for s, _ in pairs}
    return busy & set(cores)


def fan_out(
    b: ProgramBuilder,
    src: View,
    dests: Sequence[tuple[int, View]],
    relays: Sequence[tuple[int, View]] = (),
    then: Callable[[], None] | None = None,
) -> None:
    """Copy `src` (gb/dram/flash) into the sp view of every (core, view) in `dests` (views
    of src's dtype and shape, one per core); by a NoC tree when `tree_pays`, through the
    `relays` (cores that only pass the block on, with a buffer for it) when given.
    `then` emits other work between the first load and the sends and receives.

    The block travels in row pieces (`pieces`): a core forwards a piece as soon as it has
    it, so the rounds overlap and the last copy lands after about one load and one send of
    the whole block plus a piece per round, instead of a whole send per round."""
    views = dict(dests)
    pairs = tree_pairs(b.arch, src, list(views), [c for c, _ in relays])
    if pairs is None:
        for i, (core, dst) in enumerate(dests):
            b.emit(core, "dma", dst, src)
            if i == 0 and then is not None:
                then()
        return
    views.update(relays)
    if len(relays) >= len(dests):
        _chain(b, src, [c for c, _ in dests], [c for c, _ in relays], views, then)
        return
    first = tree_order(b.arch, [c for c, _ in dests], [c for c, _ in relays])[0]
    b.emit(first, "dma", views[first], src)
    if then is not None:
        then()
    for s, d in pairs:
        b.transfer(s, views[s], d, views[d])


def _chain(
    b: ProgramBuilder,
    src: View,
    dests: Sequence[int],
    relays: Sequence[int],
    views: dict[int, View],
    then: Callable[[], None] | None,
) -> None:
    """A pipelined chain: relay i passes each row piece to relay i+1 and to destination
    i as soon as it has it, so every core sends two pieces per piece period and the last
    copy lands after about two sends of the block plus one piece per relay (a doubling
    tree pays a whole send per round, and its root sends every piece once per round)."""
    order = tree_order(b.arch, dests, relays)
    chain = [c for c in order if c in set(relays)][: len(dests)]
    cuts = split_even(src.rows, pieces(src, len(chain)))
    for j, (r0, r1) in enumerate(cuts):
        b.emit(chain[0], "dma", sub(views[chain[0]], r0, r1), sub(src, r0, r1))
        if j == 0 and then is not None:
            then()
        for i, (relay, dest) in enumerate(zip(chain, sorted(dests), strict=True)):
            if i + 1 < len(chain):
                nxt = chain[i + 1]
                b.transfer(relay, sub(views[relay], r0, r1), nxt, sub(views[nxt], r0, r1))
            b.transfer(relay, sub(views[relay], r0, r1), dest, sub(views[dest], r0, r1))


def travel_cycles(arch: Arch, src: View, dests: int, relays: int) -> int:
    """Estimated cycles until the last copy of a fan-out lands (the chain's or the
    doubling tree's shape, as `fan_out` picks), from the first load."""
    load = transfer(src.space, "sp", src.nbytes, 0, arch).cycles
    whole = send_cycles(arch, src.nbytes, 0, 1)
    if dests < 2:
        return load
    if relays >= dests:
        n = pieces(src, dests)
        return load // n + 2 * whole + dests * whole // n
    return load + math.ceil(math.log2(dests + relays)) * whole


# Smallest piece worth its own send. Every piece is a send and a recv per relay in the
# program: BERT-base's FFN-up input (96 KiB to 24 cores on `large`) in 2 KiB pieces was
# 27% of the instructions at 12 layers; 4 KiB pieces cut the program from 198,628 to
# 171,268 instructions for 2,143 cycles (0.07%) more makespan (8 KiB: 157,588, +0.8%).
PIECE_BYTES = 4096


def pieces(src: View, chain: int) -> int:
    """Row pieces of a chain of `chain` relays: about two per relay (the fill of the
    pipeline then costs half a block), at least PIECE_BYTES each, at most one per row."""
    return max(1, min(src.rows, 2 * chain, src.nbytes // PIECE_BYTES))
