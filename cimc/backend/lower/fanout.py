"""Fan-out of one shared-memory block to the scratchpads of several cores.

Why: the global-buffer (and DRAM) port is chip-wide, and a DMA that crosses the NoC holds
it for `bytes / link` cycles, so N cores each loading the same activation rows (the x of a
matmul whose column tiles sit on N cores, a per-channel constant of a row-wise op) cost N
times the port. One core loads the block instead and multicasts it (`mcast`: the routers
copy the packet where the XY routes to the destinations part, so the block leaves the
loader once whatever N is): the port is held once and every destination gets its copy
about one send after the load. The cost model decides (`multicast_pays`); when loading is
cheaper the cores load their own copy as before.

The loader must wait for the block before it can pass it on, so a caller with an idle
core may pass it as a relay: it loads and multicasts, and every destination only
receives, free to start its own work (a matmul's weight loads) at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from cimc.backend.builder.alloc import split_even, sub
from cimc.backend.builder.asm import ProgramBuilder
from cimc.machine.arch import Arch
from cimc.machine.cost import transfer
from cimc.machine.program import View


def send_cycles(arch: Arch, nbytes: int, src: int, dst: int) -> int:
    """Cycles of a `send` of `nbytes` from core src to dst (isa/SPEC.md, cost model)."""
    link = math.ceil(nbytes * 8 / arch.chip.noc_bits_per_cycle)
    return max(1, link + arch.hops(src, dst) * arch.chip.noc_hop_cycles)


def multicast_pays(arch: Arch, src: View, dests: Sequence[int]) -> bool:
    """Is one load plus a multicast no slower than one load per destination?

    Per-core loads serialize on the shared port (the last copy lands after the sum of the
    data phases); the multicast costs `travel_cycles`."""
    if len(dests) < 2 or src.space not in ("gb", "dram", "flash"):
        return False
    loads = [transfer(src.space, "sp", src.nbytes, c, arch) for c in dests]
    direct = sum(t.data_cycles for t in loads) + min(t.lead for t in loads)
    return travel_cycles(arch, src, len(dests)) <= direct


def loader(arch: Arch, cores: Sequence[int], relays: Sequence[int] = ()) -> int:
    """The core that loads the block: a relay if there is one, else a destination; the one
    nearest the memory port."""
    return min(list(relays) or list(cores), key=lambda c: (arch.memory_hops(c), c))


def senders(arch: Arch, src: View, cores: Sequence[int], relays: Sequence[int] = ()) -> set[int]:
    """The cores among `cores` that load the block (the others only receive)."""
    if not multicast_pays(arch, src, sorted(cores)):
        return set(cores)
    return {loader(arch, cores, relays)} & set(cores)


def fan_out(
    b: ProgramBuilder,
    src: View,
    dests: Sequence[tuple[int, View]],
    relay: tuple[int, View] | None = None,
    then: Callable[[], None] | None = None,
) -> None:
    """Copy `src` (gb/dram/flash) into the sp view of every (core, view) in `dests` (views
    of src's dtype and shape, one per core); by a multicast when `multicast_pays`, from
    the `relay` (a core that only passes the block on, with a buffer for it) when given.
    `then` emits other work between the first load and the multicasts.

    The block travels in row pieces (`pieces`): the loader multicasts a piece while it
    loads the next, so the last copy lands about one load plus one piece's send after
    the start instead of a load plus a send of the whole block."""
    views = dict(dests)
    if not multicast_pays(b.arch, src, sorted(views)):
        for i, (core, dst) in enumerate(dests):
            b.emit(core, "dma", dst, src)
            if i == 0 and then is not None:
                then()
        return
    if relay is not None:
        views[relay[0]] = relay[1]
    first = loader(b.arch, [c for c, _ in dests], [relay[0]] if relay else [])
    others = [(c, v) for c, v in sorted(dests) if c != first]
    cuts = split_even(src.rows, pieces(src))
    b.emit(first, "dma", sub(views[first], *cuts[0]), sub(src, *cuts[0]))
    if then is not None:
        then()
    for j, (r0, r1) in enumerate(cuts):
        if j + 1 < len(cuts):  # the next piece loads while this one travels
            r2, r3 = cuts[j + 1]
            b.emit(first, "dma", sub(views[first], r2, r3), sub(src, r2, r3))
        b.multicast(first, sub(views[first], r0, r1), [(c, sub(v, r0, r1)) for c, v in others])


def travel_cycles(arch: Arch, src: View, dests: int) -> int:
    """Estimated cycles until the last copy of a fan-out lands, from the first load: the
    slower of loading and multicasting the block, plus a piece of the faster."""
    load = transfer(src.space, "sp", src.nbytes, 0, arch).cycles
    if dests < 2:
        return load
    send = send_cycles(arch, src.nbytes, 0, arch.chip.cores - 1)  # across the whole mesh
    return max(load, send) + min(load, send) // pieces(src)


# Pieces of a multicast block: the loader sends one while it loads the next, so the last
# copy lands after max(load, send) plus one piece of the other; every piece is a dma, an
# mcast and a recv per destination in the program. BERT-base's FFN-up input (96 KiB to 24
# cores on `large`): 4 pieces put it 1/4 of a load behind the load.
MULTICAST_PIECES = 4
PIECE_BYTES = 4096  # smallest piece worth its own dma, mcast and recvs


def pieces(src: View) -> int:
    """Row pieces of a multicast block: MULTICAST_PIECES, at least PIECE_BYTES each, at
    most one per row."""
    return max(1, min(src.rows, MULTICAST_PIECES, src.nbytes // PIECE_BYTES))
