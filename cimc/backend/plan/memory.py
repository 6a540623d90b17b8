"""Where the weight image lives: DRAM (a cache the compiler fills once) or flash.

Why this plan ("LLM in a flash" on a CIM chip): every weight tile reaches its macro through
a scratchpad staging buffer, read by a `dma` from DRAM or straight from flash (no pass
through DRAM: isa/SPEC.md, "Memory hierarchy"). A tile kept in DRAM is copied there once,
when the model is loaded, and read from DRAM at every inference (every token); a tile in
flash is read from flash every time. So:

- when the whole program fits `memory.dram_bytes`, every tile stays in DRAM (today's
  programs, unchanged);
- otherwise gathered tables (embeddings: one row per token is read) make way first and
  the weights split. DRAM and flash are separate channels that stream at once, so a
  token's load time is about max(DRAM bytes / DRAM bandwidth, flash bytes / flash
  bandwidth): the DRAM share is the smaller of what the DRAM budget holds and the
  bandwidth-balanced share `dram_gbps / (dram_gbps + flash_gbps)`. A larger share would
  only move the bottleneck to DRAM. For a cyclic access pattern larger than the cache
  (every token reads every weight in the same order) this static split is also what an
  optimal cache keeps: an LRU cache would evict each tile just before its reuse. Past
  that share DRAM has room left, and the tables it holds go back to DRAM (a row read from
  flash costs the flash latency and a whole chunk);
- the split is made per core and phase (the unit one core loads of one phase), so every
  phase reads from both channels at once. Each core's flash part is a prefix of its tiles
  in the phase, at least `flash_chunk_bytes` long (or empty): flash serves shorter reads at
  a chunk's cost, and the long flash latency starts first. Error diffusion over the phases
  keeps the running DRAM share on target;
- tiles of the pinned bank (resident in the macros across tokens under `pin-what-fits`:
  read once by the first token) go to flash when other tiles stream, so the DRAM budget
  serves what is read every token.

The flash image holds each phase's flash tiles core by core (one contiguous read per core
and phase, cut into pieces of at least a chunk by the prefetcher); the DRAM image keeps the
streaming plan's load order.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from cimc.backend.plan.streaming import ImageEntry, StreamPlan
from cimc.backend.plan.target import Source
from cimc.errors import CimcError
from cimc.machine.arch import Arch

TileKey = tuple[str, int, int]  # (layer, k0, n0): a tile of the image


@dataclass(frozen=True)
class StoredTile:
    """An image entry and where it is stored: `space`'s weight image, at `offset`."""

    entry: ImageEntry
    core: int
    space: Source
    offset: int

    @property
    def key(self) -> TileKey:
        t = self.entry.tile
        return (t.layer, t.k0, t.n0)


@dataclass(frozen=True)
class MemoryPlan:
    """The weight images of both spaces and the tables kept in flash.

    `dram_other_bytes` is the planner's estimate of everything else the program places in
    DRAM (values, constants, caches); the builder checks the real total against
    `memory.dram_bytes` when it declares them."""

    dram_capacity: int
    flash_capacity: int
    dram_other_bytes: int
    tiles: tuple[StoredTile, ...] = ()  # in the streaming plan's load order
    flash_tables: tuple[str, ...] = ()  # gathered tables (graph node names) in flash
    flash_table_bytes: int = 0

    @property
    def uses_flash(self) -> bool:
        return bool(self.flash_tables) or any(t.space == "flash" for t in self.tiles)

    def image_bytes(self, space: Source) -> int:
        return sum(t.entry.nbytes for t in self.tiles if t.space == space)

    def stored(self, space: Source) -> tuple[StoredTile, ...]:
        """The tiles of `space`'s image, in image order."""
        return tuple(sorted((t for t in self.tiles if t.space == space), key=lambda t: t.offset))

    def without(self, layers: Collection[str]) -> MemoryPlan:
        """The plan with the tiles of `layers` left out of the images, the other tiles
        moved up to close the gaps (in image order): what remains for the prefetcher when
        those layers load their weights by themselves (cimc/backend/plan/sparsity.py)."""
        if not layers:
            return self
        kept = []
        for space in ("dram", "flash"):
            at = 0
            for t in self.stored(space):  # type: ignore[arg-type]
                if t.entry.tile.layer not in layers:
                    kept.append(replace(t, offset=at))
                    at += t.entry.nbytes
        order = {t.entry: k for k, t in enumerate(self.tiles)}
        return replace(self, tiles=tuple(sorted(kept, key=lambda t: order[t.entry])))

    def streamed_bytes(self, stream: StreamPlan, space: Source) -> int:
        """Bytes of `space` read by every steady-state inference (decode: every token)."""
        pinned = {e.phase for e in stream.image if stream.phases[e.phase].bank == -1}
        pinned = pinned if stream.streamed else set()
        return sum(
            t.entry.nbytes for t in self.tiles if t.space == space and t.entry.phase not in pinned
        )


def in_dram(stream: StreamPlan | None, arch: Arch, other: int = 0) -> MemoryPlan:
    """Every tile in DRAM at the streaming plan's offsets (capacity not checked)."""
    mem = arch.memory
    if stream is None:
        return MemoryPlan(mem.dram_bytes, mem.flash_bytes, other)
    cores = _cores(stream)
    tiles = tuple(StoredTile(e, cores[_key(e)], "dram", e.offset) for e in stream.image)
    return MemoryPlan(mem.dram_bytes, mem.flash_bytes, other, tiles)


def plan_memory(
    stream: StreamPlan | None, arch: Arch, other: int, tables: dict[str, int]
) -> MemoryPlan:
    """Place the weight image and the gathered `tables` (node -> bytes) within
    `memory.dram_bytes`, given `other` bytes of DRAM the rest of the program needs."""
    mem = arch.memory
    table_bytes = sum(tables.values())
    weights = stream.bytes_first_inference if stream is not None else 0
    if other + table_bytes + weights <= mem.dram_bytes:
        return in_dram(stream, arch, other)
    budget = mem.dram_bytes - other
    if budget < 0:
        raise CimcError(
            f"the activations, caches and small constants need about {other} bytes of DRAM "
            f"and the arch has {mem.dram_bytes}; raise memory.dram_bytes",
            "plan-memory",
        )
    tiles = _split(stream, arch, budget) if stream is not None else ()
    room = budget - sum(t.entry.nbytes for t in tiles if t.space == "dram")
    in_flash = _tables_to_flash(tables, room)
    memory = MemoryPlan(
        mem.dram_bytes,
        mem.flash_bytes,
        other,
        tiles,
        in_flash,
        sum(tables[name] for name in in_flash),
    )
    need = memory.image_bytes("flash") + memory.flash_table_bytes
    if need > mem.flash_bytes:
        total = memory.image_bytes("flash") + memory.image_bytes("dram") + table_bytes
        raise CimcError(
            f"the model's {total} bytes of weights and tables do not fit: {budget} bytes of "
            f"DRAM are left for them and {need} must go to flash, which holds "
            f"{mem.flash_bytes}; raise memory.flash_bytes to at least {need} or "
            "memory.dram_bytes",
            "plan-memory",
        )
    return memory


def _tables_to_flash(tables: dict[str, int], room: int) -> tuple[str, ...]:
    """The gathered tables that go to flash: those the DRAM left after the weight split
    cannot hold, largest first kept. The split keeps at most the bandwidth-balanced share
    of the weights in DRAM, so past that share DRAM has room a table can use: a row read
    from DRAM costs its bytes, from flash the flash latency and a whole chunk."""
    kept: list[str] = []
    for name in sorted(tables, key=lambda n: (-tables[n], n)):
        if tables[name] <= room:
            kept.append(name)
            room -= tables[name]
    return tuple(sorted(set(tables) - set(kept)))


def dram_share(arch: Arch) -> float:
    """The share of the streamed bytes that keeps both channels equally busy."""
    d, f = arch.memory.dram_gbps, arch.memory.flash_gbps
    return d / (d + f)


def _key(e: ImageEntry) -> TileKey:
    return (e.tile.layer, e.tile.k0, e.tile.n0)


def _cores(stream: StreamPlan) -> dict[TileKey, int]:
    """The core each image entry is loaded on (its first copy's)."""
    where: dict[TileKey, int] = {}
    for phase in stream.phases:
        for pt in phase.placement.tiles:
            if pt.copy == 0:
                where[(pt.tile.layer, pt.k0, pt.n0)] = pt.core
    return where


def _runs(stream: StreamPlan) -> list[tuple[int, int, list[ImageEntry]]]:
    """(phase, core, entries in image order) of every core's share of every phase."""
    cores = _cores(stream)
    runs: dict[tuple[int, int], list[ImageEntry]] = {}
    for e in stream.image:
        runs.setdefault((e.phase, cores[_key(e)]), []).append(e)
    return [(phase, core, entries) for (phase, core), entries in sorted(runs.items())]


def _split(stream: StreamPlan, arch: Arch, budget: int) -> tuple[StoredTile, ...]:
    """Each run's flash prefix and DRAM suffix (see the module doc)."""
    pinned = {p.index for p in stream.resident} if stream.streamed else set()
    every = [r for r in _runs(stream) if r[0] not in pinned]
    streamed = sum(e.nbytes for _, _, es in every for e in es)
    share = min(dram_share(arch), budget / streamed) if streamed else 0.0
    chunk = arch.memory.flash_chunk_bytes
    cores = _cores(stream)
    space: dict[TileKey, Source] = {}
    seen = in_dram = 0
    for phase, _, entries in _runs(stream):
        if phase in pinned:
            space.update((_key(e), "flash") for e in entries)
            continue
        run = sum(e.nbytes for e in entries)
        seen += run
        want = min(round(share * seen) - in_dram, budget - in_dram)
        cut = _cut(entries, want, chunk, budget - in_dram)
        space.update((_key(e), "flash" if i < cut else "dram") for i, e in enumerate(entries))
        in_dram += sum(e.nbytes for e in entries[cut:])
    return _layout(stream, space, cores)


def _cut(entries: Sequence[ImageEntry], want: int, chunk: int, room: int) -> int:
    """How many leading entries go to flash: the DRAM suffix closest to `want` bytes, at
    most `room`, with a flash prefix of at least `chunk` bytes or none."""
    sizes = [e.nbytes for e in entries]
    best, best_gap = len(entries), None
    for cut in range(len(entries) + 1):
        flash, dram = sum(sizes[:cut]), sum(sizes[cut:])
        if dram > room or 0 < flash < chunk:
            continue
        gap = abs(dram - want)
        if best_gap is None or gap < best_gap:
            best, best_gap = cut, gap
    return best


def _layout(
    stream: StreamPlan, space: dict[TileKey, Source], cores: dict[TileKey, int]
) -> tuple[StoredTile, ...]:
    """Offsets: DRAM in the streaming plan's order, flash by phase, then core."""
    offsets: dict[TileKey, int] = {}
    at = 0
    for e in stream.image:
        if space[_key(e)] == "dram":
            offsets[_key(e)] = at
            at += e.nbytes
    at = 0
    for e in sorted(stream.image, key=lambda e: (e.phase, cores[_key(e)], e.offset)):
        if space[_key(e)] == "flash":
            offsets[_key(e)] = at
            at += e.nbytes
    return tuple(
        StoredTile(e, cores[_key(e)], space[_key(e)], offsets[_key(e)]) for e in stream.image
    )
