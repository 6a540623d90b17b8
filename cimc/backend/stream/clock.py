"""An estimate, while emitting, of when each core reaches the instruction being emitted.

The prefetcher (cimc/backend/stream/prefetch.py) must place a tile's `mload` where its staging
`dma` has already arrived: in-order issue stalls the core on an `mload` whose data is
still on its way, but a staging buffer held until the tile's first use keeps the DRAM
channel idle through long vector phases. `EmitClock` replays the schedule rules of
cimc/machine/schedule.py on the instructions as they are emitted, minus data dependences
(not known yet without the whole program): in-order issue, one unit per core unit (the
DMA engine has `core.dma_channels` channels), chip-wide channels first come first served,
recv after its send, barriers at the latest arrival. Ignoring data dependences lets the
cores' clocks drift apart, so a chip-wide channel is not booked first come first served on
them (a core behind would queue after one ahead): each core gets a fair share of it, its
transfers in a row at `1 / sharers` of the bandwidth.
"""

from __future__ import annotations

import bisect
from collections import deque

from cimc.machine import cost as _cost  # noqa: F401  (registers the cost functions)
from cimc.machine.arch import Arch
from cimc.machine.cost import instr_cost
from cimc.machine.program import SENDS, Imm, Instr, destinations


class EmitClock:
    def __init__(self, arch: Arch, sharers: int = 1) -> None:
        self.arch, self.sharers = arch, max(1, sharers)
        self.issue: dict[int, int] = {}  # core -> earliest issue of its next instruction
        self.units: dict[tuple[int, str], int] = {}  # (core, unit) -> free at
        self.dma_ends: dict[int, list[int]] = {}  # core -> ends of its DMAs in flight
        self.channels: dict[tuple[str, int], int] = {}  # (channel, core) -> its share free at
        self.sent: dict[tuple[int, int, int], deque[int]] = {}  # (src, dst, tag) -> arrivals

    def now(self, core: int) -> int:
        return self.issue.get(core, 0)

    def advance(self, core: int, instr: Instr) -> int:
        """Account for `instr` emitted on `core`; returns its estimated end."""
        if instr.opcode == "barrier":
            return self.now(core)  # barrier(cores) aligns the clocks
        cost = instr_cost(instr, core, self.arch)
        t = self.now(core)
        n = self.arch.core.dma_channels
        queued = cost.unit == "dma" and n > 0
        if queued:
            ends = self.dma_ends.setdefault(core, [])
            del ends[: bisect.bisect_right(ends, t)]
            t = max(t, ends[-n]) if len(ends) >= n else t
        issue = t
        if not queued:
            t = max(t, self.units.get((core, cost.unit), 0))
        data = cost.data_cycles * self.sharers if cost.channels else 0
        for name in cost.channels:
            t = max(t, self.channels.get((name, core), 0) - cost.lead)
        end = t + cost.cycles - cost.data_cycles + data if cost.channels else t + cost.cycles
        if instr.opcode == "recv":
            peer, tag = instr.operands[0], instr.operands[2]
            assert isinstance(peer, Imm) and isinstance(tag, Imm)
            arrivals = self.sent.get((peer.value, core, tag.value))
            end = max(end, arrivals.popleft() + 1) if arrivals else end
            self.issue[core] = end
        else:
            self.issue[core] = (issue if queued else t) + 1
        if queued:
            bisect.insort(self.dma_ends[core], end)
        self.units[(core, cost.unit)] = end
        for name in cost.channels:
            self.channels[(name, core)] = t + cost.lead + data
        if instr.opcode in SENDS:
            tag = instr.operands[2]
            assert isinstance(tag, Imm)
            for dst in destinations(instr):
                self.sent.setdefault((core, dst, tag.value), deque()).append(end)
        return end

    def wait(self, core: int, t: int) -> None:
        """The core's next instruction waits for data known to arrive at `t`."""
        self.issue[core] = max(self.now(core), t)

    def recv_done(self, core: int, instr: Instr) -> int:
        """When the recv `instr` about to be emitted on `core` completes (its send is out)."""
        peer, tag = instr.operands[0], instr.operands[2]
        assert isinstance(peer, Imm) and isinstance(tag, Imm)
        arrivals = self.sent.get((peer.value, core, tag.value))
        return max(self.now(core), arrivals[0] + 1 if arrivals else 0)

    def barrier(self, cores: list[int]) -> None:
        """Every core in `cores` leaves a barrier at the latest arrival."""
        release = max((self.now(c) for c in cores), default=0)
        for c in cores:
            self.issue[c] = release
