"""Feeding the cores of a linear layer: x into their scratchpads (a NoC fan-out, relayed
by idle cores), their weight tiles written early, and the MVM chains of a column block.

Why apart from linear.py: these decide the order of each core's instructions (in
order issue, blocking recv), which is what keeps the DRAM busy while x travels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from cimc.backend.builder.alloc import cols, sub
from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.lower.common import SLACK
from cimc.backend.lower.fanout import fan_out, senders, travel_cycles
from cimc.backend.lower.linear_groups import GroupRows
from cimc.backend.lower.tiles import PlacedTile, TileLoader, mvm_opcode, mvm_tiles
from cimc.machine.cost import transfer
from cimc.machine.program import View


@dataclass(frozen=True)
class CoreBufs:
    """One core's buffers: x columns lo:hi of a token chunk, accumulators, staging."""

    lo: int
    hi: int
    xs: View
    acc: View
    tmp: View | None
    loader: TileLoader
    acc2: View | None = None  # a second MVM chain (see mvm_chains)
    groups: GroupRows | None = None  # group-wise weight scales (linear_groups.py)
    gtmp: View | None = None  # ... each row window's partial sum


def load_x(
    b: ProgramBuilder,
    x: View,
    run: tuple[int, int],
    bufs: dict[int, CoreBufs],
    preload: bool,
    idle: Sequence[int] = (),
) -> None:
    """x rows of a run into the cores that need them: cores with the same K span get the
    same block, loaded once and multicast over the NoC when that is cheaper (fanout.py),
    by an `idle` core (holding no tile of this layer) when one has the room.

    With `preload`, a core that only receives x writes tiles before its blocking recv, so
    its weight DMAs keep the DRAM busy while x travels; a core that loads or forwards x
    starts its tiles after its sends. The first tiles (one per staging buffer) go before
    x's first load (where x is ordered after its producer: a barrier waits for everything
    before it, so only a few overlap the previous op), then as many as the receiving
    cores together can load from DRAM while x travels (`_early_tiles`); the rest follow
    the recv, each right before its MVM, so they do not delay the next layer's loads."""
    t0, t1 = run
    spans: dict[tuple[int, int], list[tuple[int, View]]] = {}
    for core, cb in bufs.items():
        spans.setdefault((cb.lo, cb.hi), []).append((core, sub(cb.xs, 0, t1 - t0)))
    srcs = {span: sub(x, t0, t1, *span) for span in spans}
    spare = sorted(idle, key=lambda c: (b.arch.memory_hops(c), c))
    relays: dict[tuple[int, int], tuple[int, View]] = {}
    for span, dests in spans.items():
        if len(dests) < 2:
            continue
        need = srcs[span].nbytes + SLACK
        mine = next((c for c in spare if b.sp_largest_free(c) >= need), None)
        if mine is not None:
            spare.remove(mine)
            relays[span] = (mine, b.alloc(mine, x.dtype, t1 - t0, span[1] - span[0]))
    busy = set().union(
        *(
            senders(b.arch, srcs[k], [c for c, _ in d], [relays[k][0]] if k in relays else [])
            for k, d in spans.items()
        )
    )
    leaves = sorted(set(bufs) - busy) if preload else []
    early = _early_tiles(b, srcs, spans, relays, bufs, leaves)

    def write_tiles(first: bool) -> None:
        for core in leaves:
            loader = bufs[core].loader
            for s in loader.order[: len(loader.staging) if first else early]:
                loader.ensure(s)

    write_tiles(first=True)
    for i, (span, dests) in enumerate(spans.items()):
        then = partial(write_tiles, first=False) if i == 0 else None
        fan_out(b, srcs[span], dests, relays.get(span), then)
        if span in relays:
            b.free(*relays[span])


def _early_tiles(
    b: ProgramBuilder,
    srcs: dict[tuple[int, int], View],
    spans: dict[tuple[int, int], list[tuple[int, View]]],
    relays: dict[tuple[int, int], tuple[int, View]],
    bufs: dict[int, CoreBufs],
    leaves: Sequence[int],
) -> int:
    """Tiles per receiving core to write before its recv: the DRAM time the receivers
    share while x travels (a load and a multicast, pipelined) over one tile's."""
    if not leaves:
        return 0
    travel = max(travel_cycles(b.arch, srcs[span], len(dests)) for span, dests in spans.items())
    loader = bufs[leaves[0]].loader
    if not loader.order:
        return 0
    tile = loader.w.tile(loader.order[0])
    per_tile = transfer(tile.space, "sp", tile.nbytes, leaves[0], b.arch).data_cycles
    return max(len(loader.staging), math.ceil(travel / max(1, per_tile * len(leaves))))


def mvm_chains(
    b: ProgramBuilder,
    acc: View,
    acc2: View | None,
    x: View,
    kbase: int,
    part: Sequence[PlacedTile],
    loader: TileLoader,
) -> None:
    """acc = x @ W over the tiles of one core in one column block. Each `mvm.acc` waits
    for the previous one (same accumulator), so with a second accumulator the tiles go
    alternately into two chains that run side by side on their macros, then one add."""
    if acc2 is None or len(part) < 2:
        mvm_tiles(b, acc, x, kbase, part, loader)
        return
    for i, s in enumerate(part):
        ref = loader.ensure(s)
        dst = (acc, acc2)[i % 2]
        b.emit(
            loader.core,
            mvm_opcode(s, i > 1),
            dst,
            cols(x, s.k0 - kbase, s.k1 - kbase),
            ref,
        )
    b.emit(loader.core, "add", acc, acc, acc2)
