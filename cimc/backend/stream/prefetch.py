"""Weight streaming in emitted programs: the planner's phases, prefetched ahead of need.

`StreamSetup` turns a `StreamPlan` (cimc/backend/plan/streaming.py) into program objects: the
`weights.img` constant in DRAM holding the weight tiles in load order (so a phase is one
contiguous range of the image) and, when the memory plan (cimc/backend/plan/memory.py) puts
tiles in flash, the `weights.flash` constant in flash holding those, phase by phase and
core by core; the tile slots of every layer (their phase placement), and the macros left
free for run-time operands (attention K^T / V, matmuls).

`Prefetcher` emits the loads. Each core's tiles of a phase are cut into pieces (tiles
contiguous in one image, up to `chunk` bytes from DRAM; from flash at least
`memory.flash_chunk_bytes`, the size below which a flash read costs a whole chunk): one
`dma` of the piece into one of the core's `STAGES` scratchpad staging buffers, later one
`mload` per tile. A phase's flash pieces are queued before its DRAM pieces: the flash
latency is the longer one, and both channels then stream at once. A phase is queued
once the macros of its bank are free in program order: the previous phase on that bank
has been passed (a later phase is in use) or used up by the graph nodes lowered so far
(`node_done`). So under `double-buffer` phase i+1 loads while phase i computes, under
`sequential` only when phase i is done, and resident (pinned) phases load from the start.
A program reading weights from flash queues every piece at once instead: the `dma`s read
ahead as far as the staging buffers allow and only the `mload`s wait for the bank, since
the data of one bank in flight need not cover the flash latency (it does not on small
machines). DRAM-only programs keep the bank gating (their programs are unchanged).
When every weight is resident (the whole plan is one resident phase) the pieces are
released in image order within `lookahead_bytes` of the latest tile used, so the DRAM,
first come first served, serves them roughly in order of use.

When to emit: a `dma` no longer stalls its core (the DMA engine has `core.dma_channels`
channels, cimc/machine/schedule.py) and fences ignore constant reads, so a piece's `dma`
is emitted as soon as a staging buffer is free. Its `mload`s stall the core until the
data is there (in-order issue), so they are emitted where an estimated clock
(`EmitClock`, cimc/backend/stream/clock.py) says the data has arrived: after any
instruction of the core, before a `recv` or barrier the core would wait at anyway, or at
the latest when a tile is needed (`need`, from `TileLoader.ensure`). Each `mload` frees a
staging buffer for the next piece, so the DRAM channel keeps streaming through vector
phases (layer norm, softmax, GELU) instead of waiting for the next matmul.
Correctness does not depend on the timing: the builder tracks what each macro holds and
`TileLoader` reloads any tile that is not there, and no `mload` of a piece is emitted over
a tile a lowering has asked for (`need`) until its `mvm` is out (`pending`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np

from cimc.backend.builder.alloc import cols
from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.builder.values import decl_name
from cimc.backend.plan.mapping import PlacedTile
from cimc.backend.plan.memory import MemoryPlan, StoredTile, in_dram
from cimc.backend.plan.streaming import StreamPlan
from cimc.backend.plan.target import Source
from cimc.backend.stream.clock import EmitClock
from cimc.ir.graph import Graph
from cimc.machine.arch import Arch
from cimc.machine.kernels import pack_int4
from cimc.machine.program import Instr, MacroRef, View
from cimc.quant.dialect import QLinear

IMAGE = "weights.img"  # the weight tiles kept in DRAM
FLASH_IMAGE = "weights.flash"  # the weight tiles read from flash
IMAGES = (IMAGE, FLASH_IMAGE)
_IMAGE_NAMES: tuple[tuple[Source, str], ...] = (("dram", IMAGE), ("flash", FLASH_IMAGE))
STAGES = 3  # staging buffers per core: pieces loaded ahead of their first use
Lane = tuple[int, Source]  # (core, the space its pieces are read from)
TileId = tuple[str, int, int, int, int]  # (constant-name prefix of the layer, k0, k1, n0, n1)


@dataclass(frozen=True)
class ImagePiece:
    """Tiles of one core and phase, contiguous in the image: one dma, then mloads."""

    core: int
    phase: int
    space: Source  # the image it is read from
    offset: int  # in that image
    nbytes: int
    order: int  # bytes of every piece queued before it (the frontier's measure)
    layer: int  # program position of its first tile's layer
    tiles: tuple[tuple[PlacedTile, TileId, int], ...]  # (slot, key, offset in the piece)


@dataclass
class StreamSetup:
    """What the lowerings need of a streamed program: the image, each layer's tiles."""

    plan: StreamPlan
    memory: MemoryPlan
    blobs: dict[Source, View]  # the image constant of each space holding tiles
    slots: dict[str, tuple[PlacedTile, ...]]  # graph node name -> its tiles' slots
    # graph node name -> the slots of each duplicate copy (1, 2, ...; the map pass's
    # `mapping=duplicate`): loaded by the layer itself, from the same image bytes
    copies: dict[str, tuple[tuple[PlacedTile, ...], ...]] = field(default_factory=dict)
    image: dict[tuple[int, int, int, int], View] = field(default_factory=dict)
    reserved: tuple[int, ...] = ()  # macro indices left for run-time operands


def declare_image(
    b: ProgramBuilder,
    plan: StreamPlan,
    weights: dict[str, np.ndarray],
    names: dict[str, str],
    memory: MemoryPlan | None = None,
) -> StreamSetup:
    """The load-ordered image constants (every tile row-major at its offset) and slots.
    `weights[layer]` is the [K x N] weight codes (int4 tiles are stored packed, see
    `tile_bytes`); `names[layer]` its constant prefix;
    `memory` says which tiles are in flash (None: all in DRAM)."""
    memory = memory or in_dram(plan, b.arch)
    blobs: dict[Source, View] = {}
    for space, name in _IMAGE_NAMES:
        stored = memory.stored(space)
        if space == "flash" and not stored:
            continue
        total = sum(t.entry.nbytes for t in stored)
        data = np.zeros((1, max(total, 1)), np.int8)
        for st in stored:
            t = st.entry.tile
            block = tile_bytes(weights[t.layer][t.k0 : t.k1, t.n0 : t.n1], t.bits)
            data[0, st.offset : st.offset + t.cells] = block.ravel()
        blobs[space] = b.const(name, data, "i8", space)
    slots: dict[str, list[PlacedTile]] = {}
    copies: dict[str, dict[int, list[PlacedTile]]] = {}
    for phase in plan.phases:
        for pt in phase.placement.tiles:
            if pt.copy == 0:
                slots.setdefault(pt.tile.layer, []).append(pt)
            else:
                copies.setdefault(pt.tile.layer, {}).setdefault(pt.copy, []).append(pt)
    for space, name in _IMAGE_NAMES:
        for st in memory.stored(space):  # a readable map of the images in the header
            t = st.entry.tile
            b.note(f"{name}+{st.offset}: {names[t.layer]}.w[{t.k0}:{t.k1}, {t.n0}:{t.n1}]")
    return StreamSetup(
        plan,
        memory,
        blobs,
        {k: tuple(v) for k, v in slots.items()},
        {k: tuple(tuple(v[c]) for c in sorted(v)) for k, v in copies.items()},
    )


def tile_bytes(block: np.ndarray, bits: int) -> np.ndarray:
    """A tile's bytes as the macro cells take them: int8 codes as they are, int4 codes
    two a byte (SPEC: mvm.i4)."""
    return np.asarray(block, np.int8) if bits == 8 else pack_int4(block)


def layer_image(setup: StreamSetup, layer: str) -> dict[tuple[int, int, int, int], View]:
    """Tile views of `layer` into the images (its `weight_image` for lower_linear)."""
    out = {}
    for st in setup.memory.tiles:
        t = st.entry.tile
        if t.layer == layer:
            view = cols(setup.blobs[st.space], st.offset, st.offset + t.cells)
            out[(t.k0, t.k1, t.n0, t.n1)] = View(
                view.space,
                view.addr,
                "i8",
                t.rows,
                t.cell_cols,
                symbol=view.symbol,
                offset=view.offset,
            )
    return out


def _pieces(
    setup: StreamSetup, names: dict[str, str], chunk: int, flash_chunk: int
) -> list[ImagePiece]:
    """Per phase, per core: consecutive image tiles of one core; from DRAM up to `chunk`
    bytes, from flash at least a flash chunk. In queue order: by phase, flash first."""
    where = {}
    for ph in setup.plan.phases:
        for pt in ph.placement.tiles:
            if pt.copy == 0:
                where[(pt.tile.layer, pt.k0, pt.n0)] = pt
    layer_index = {names[e.tile.layer]: e.tile.layer_index for e in setup.plan.image}
    runs = _runs(setup.memory)
    pieces: list[ImagePiece] = []
    order = 0
    for (phase, rank, _, _), run in sorted(runs.items()):
        space: Source = "flash" if rank == 0 else "dram"
        for part in _cut_run(run, chunk, flash_chunk if space == "flash" else 0):
            first = part[0]
            tiles = tuple(
                (where[st.key], _tile_id(st, names), st.offset - first.offset) for st in part
            )
            nbytes = part[-1].offset + part[-1].entry.nbytes - first.offset
            layer = layer_index[tiles[0][1][0]]
            pieces.append(
                ImagePiece(first.core, phase, space, first.offset, nbytes, order, layer, tiles)
            )
            order += nbytes
    return pieces


def _tile_id(st: StoredTile, names: dict[str, str]) -> TileId:
    t = st.entry.tile
    return (names[t.layer], t.k0, t.k1, t.n0, t.n1)


def _runs(memory: MemoryPlan) -> dict[tuple[int, int, int, int], list[StoredTile]]:
    """Tiles of one phase, space and core that are consecutive in their image, keyed
    (phase, flash first, offset of the run's first tile, core)."""
    runs: dict[tuple[int, int, int, int], list[StoredTile]] = {}
    for space in ("flash", "dram"):
        last: StoredTile | None = None
        key = (0, 0, 0, 0)
        for st in memory.stored(space):  # type: ignore[arg-type]
            joins = (
                last is not None
                and last.core == st.core
                and last.entry.phase == st.entry.phase
                and last.offset + last.entry.nbytes == st.offset
            )
            if not joins:
                key = (st.entry.phase, 0 if space == "flash" else 1, st.offset, st.core)
                runs[key] = []
            runs[key].append(st)
            last = st
    return runs


def _cut_run(run: list[StoredTile], most: int, least: int) -> list[list[StoredTile]]:
    """`run` in pieces: of at most `most` bytes (a tile larger stays whole), or, when
    `least` is set, of at least `least` bytes (a short rest joins the piece before)."""
    parts: list[list[StoredTile]] = []
    size = 0
    for st in run:
        full = size >= least if least else size + st.entry.nbytes > most
        if not parts or full:
            parts.append([])
            size = 0
        parts[-1].append(st)
        size += st.entry.nbytes
    if least and len(parts) > 1 and size < least:
        rest = parts.pop()
        parts[-1] += rest
    return parts


class Prefetcher:
    """Builder hook that streams the weight image into the macros (see the module doc)."""

    def __init__(
        self,
        b: ProgramBuilder,
        setup: StreamSetup,
        names: dict[str, str],
        chunk: int,
        comments: dict[str, str],
        external: dict[TileId, int] | None = None,
    ) -> None:
        self.b, self.setup = b, setup
        pieces = _pieces(setup, names, chunk, b.arch.memory.flash_chunk_bytes)
        self.phase_of = {key: p.phase for p in pieces for _, key, _ in p.tiles}
        self.piece_of = {key: p for p in pieces for _, key, _ in p.tiles}
        # Tiles their layer loads by itself (sparse layers: only the active rows, known at
        # run time) by phase: never prefetched, but counted in their phase, so its bank
        # stays busy until they are used.
        self.external = dict(external or {})
        phases = setup.plan.phases
        self.prev_user: list[int] = []  # the previous phase on the same bank, or -2
        for i, ph in enumerate(phases):
            same = [j for j in range(i) if phases[j].bank == ph.bank and ph.bank != -1]
            self.prev_user.append(same[-1] if same else -2)
        self.waiting: list[ImagePiece] = pieces  # not yet allowed (bank busy), load order
        # From flash, pieces are read ahead of their bank (see the module doc): every piece
        # is ready from the start; its mloads still wait for the bank.
        self.read_ahead = setup.memory.image_bytes("flash") > 0
        # per (core, space) a lane: the pieces ready to load, in load order, the pieces in
        # flight with their estimated arrival, and its free staging buffers. The two
        # spaces' lanes do not wait for each other, so DRAM and flash stream at once.
        self.ready: dict[Lane, deque[ImagePiece]] = {}
        self.inflight: dict[Lane, deque[tuple[ImagePiece, View, int]]] = {}
        self.loaded: set[TileId] = set()
        self.current = -1
        self.used: set[TileId] = set()
        self.unused = [0] * len(phases)  # per phase: tiles not needed yet
        for p in pieces:
            self.unused[p.phase] += len(p.tiles)
        for phase in self.external.values():
            self.unused[phase] += 1
        self.finished = -1  # every phase up to this one is used by nodes already lowered
        cores = sorted({p.core for p in pieces})
        self.free: dict[Lane, deque[View]] = {}
        for space, _ in _IMAGE_NAMES:
            mine = [p for p in pieces if p.space == space]
            size = max((p.nbytes for p in mine), default=1)
            count = flash_stages(b.arch, size, len(cores)) if space == "flash" else STAGES
            for c in sorted({p.core for p in mine}):
                lane = (c, space)
                self.free[lane] = deque(_staging(b, c, size, count))
                self.ready[lane], self.inflight[lane] = deque(), deque()
        self.lanes = {c: [lane for lane in self.free if lane[0] == c] for c in cores}
        self.comments = comments  # constant prefix -> its node's comment (load provenance)
        self.clock = EmitClock(b.arch, sharers=len(cores))
        self._placing = False  # inside our own emission: only the clock moves
        self.epoch = 0  # barriers emitted so far
        self.issued_in: dict[int, int] = {}  # id(piece) -> barriers before its dma
        self._last_end = 0
        # All weights resident: every piece could load at once, but the DRAM serves
        # requests first come first served, so the first layer's tiles would wait behind
        # the last layer's. A piece is released only within `window` image bytes of the
        # latest tile needed, so requests reach the DRAM roughly in order of use.
        self.window = lookahead_bytes(b.arch) if not setup.plan.streamed else None
        self.frontier = self.window or 0
        self.gated: deque[ImagePiece] = deque()  # allowed, beyond the frontier (load order)
        # (core, macro) -> the tile a lowering asked for there and has not multiplied by
        # yet: no piece is mloaded over it meanwhile (see `_blocked`).
        self.pending: dict[tuple[int, int], TileId] = {}

    def start(self) -> None:
        """Queue the first loads (once installed as the builder's hook: they are clocked)."""
        self._allow()

    # ---------------------------------------------------------------- builder hooks
    def owns(self, key: object) -> bool:
        """Will the prefetcher still load this tile (a loader need not stage it)?"""
        return key in self.phase_of and key not in self.loaded

    def need(self, core: int, key: object) -> None:
        """A tile is about to be used: it (and the earlier pieces of its core) is mloaded
        now, and the core's free staging buffers are refilled with the next pieces."""
        if key in self.external:
            self._external_used(key)  # type: ignore[arg-type]
            return
        piece = self.piece_of.get(key)  # type: ignore[call-overload]
        if piece is None:
            return
        for slot, tile, _ in piece.tiles:
            if tile == key:
                self.pending[(core, slot.macro)] = tile
        if key not in self.used:
            self.used.add(key)  # type: ignore[arg-type]
            self.unused[piece.phase] -= 1
        if piece.phase > self.current:
            self.current = piece.phase
            self._allow()
        if self.window is not None and piece.order + self.window > self.frontier:
            self.frontier = piece.order + self.window
            self._release()
        core, lane = piece.core, (piece.core, piece.space)
        while key not in self.loaded:
            if self.inflight[lane] and (not self.free[lane] or self._held(piece)):
                oldest = self.inflight[lane][0][0]
                if oldest is not piece and self._blocked(oldest, key):  # type: ignore[arg-type]
                    break  # TileLoader loads the tile itself
                self._mload_oldest(lane)
            elif self.ready[lane]:
                self._issue(self.ready[lane].popleft())
            else:  # not loadable here: TileLoader loads it itself
                break
        self._top_up(core)

    def _external_used(self, key: TileId) -> None:
        """A tile its layer loads itself is used: its phase is current, and done once
        all its tiles are."""
        phase = self.external[key]
        if key not in self.used:
            self.used.add(key)
            self.unused[phase] -= 1
        if phase > self.current:
            self.current = phase
            self._allow()

    def before(self, core: int, instr: Instr) -> None:
        """A recv is about to be emitted: the core will wait for it anyway, so the pieces
        that arrive meanwhile are mloaded (and their buffers refilled) before it."""
        if instr.opcode == "recv":
            self._fill(core, self.clock.recv_done(core, instr))

    def emitted(self, core: int, instr: Instr) -> None:
        """Every instruction: move the clock; mload the pieces that have arrived by now."""
        if instr.opcode.startswith("mvm"):
            macro = instr.operands[2]
            assert isinstance(macro, MacroRef)
            self.pending.pop((core, macro.index), None)
        self._last_end = self.clock.advance(core, instr)
        self._fill(core, self.clock.now(core))

    def barrier(self, cores: list[int]) -> None:
        """Before a barrier: every core waits for the last one, and loads meanwhile. A piece
        whose dma was emitted before the previous barrier is mloaded here whatever the clock
        says: it has had a whole barrier interval to arrive, and the estimate, blind to the
        waits at barriers, runs early (measured: this closes the DRAM gaps after GELU)."""
        release = max((self.clock.now(c) for c in cores), default=0)
        self.epoch += 1
        for core in cores:
            held = [f for lane in self.lanes.get(core, ()) for f in self.inflight[lane]]
            old = [at for p, _, at in held if self.issued_in[id(p)] < self.epoch - 1]
            self._fill(core, max([release, *old]))
        self.clock.barrier(cores)

    def _fill(self, core: int, until: int) -> None:
        """mload the core's pieces that arrive by `until`, refilling their buffers."""
        if self._placing or core not in self.lanes:
            return
        self._placing = True
        try:
            for lane in self.lanes[core]:
                self._fill_lane(lane, until)
        finally:
            self._placing = False

    def _fill_lane(self, lane: Lane, until: int) -> None:
        arrived = self.inflight[lane]
        while True:
            while (
                arrived
                and arrived[0][2] <= until
                and self._bank_free(arrived[0][0])
                and not self._blocked(arrived[0][0])
            ):
                self._mload_oldest(lane)
            before = len(arrived)
            self._top_up(lane[0])
            if len(arrived) == before or arrived[0][2] > until:
                break

    def node_done(self) -> None:
        """A graph node is lowered: the phases it used up free their banks for the next
        ones (without waiting for the next phase's first tile)."""
        old = self.finished
        while self.finished + 1 < len(self.unused) and self.unused[self.finished + 1] == 0:
            self.finished += 1
        if self.finished != old:
            self._allow()
        self.pending.clear()  # the node's multiplications are all emitted

    # ---------------------------------------------------------------- emission
    def _held(self, piece: ImagePiece) -> bool:
        return any(p is piece for p, _, _ in self.inflight[(piece.core, piece.space)])

    def _blocked(self, piece: ImagePiece, wanted: TileId | None = None) -> bool:
        """Would the piece's mload overwrite a macro whose tile a lowering has asked for
        (`need`) but not multiplied by yet? The bank test below assumes phases run one
        after another, but a phase can be one core's share of a column block that another
        core's phase computes at the same time: then it passes a phase still in use, and
        between a lowering's load of a tile (TileLoader) and its mvm an opportunistic
        mload would replace the tile (a wrong product, seen with weights in flash).
        `wanted`: the tile being asked for, which is loaded after the piece anyway."""
        mine = {key for _, key, _ in piece.tiles}
        waiting = (self.pending.get((piece.core, slot.macro)) for slot, _, _ in piece.tiles)
        return any(key is not None and key not in mine and key != wanted for key in waiting)

    def _bank_free(self, piece: ImagePiece) -> bool:
        """Are the macros of the piece's phase free (its bank's previous phase passed)?"""
        return self.prev_user[piece.phase] <= max(self.current - 1, self.finished)

    def _allow(self) -> None:
        """Queue the phases whose bank is free (its previous phase has been passed)."""
        passed = max(self.current - 1, self.finished)
        if self.read_ahead and self.waiting:  # queued at once, mloaded when free
            allowed, self.waiting = self.waiting, []
            for p in allowed:
                self.ready[(p.core, p.space)].append(p)
            for core in sorted({p.core for p in allowed}):
                self._top_up(core)
            return
        if self.read_ahead:
            return
        allowed = [p for p in self.waiting if self.prev_user[p.phase] <= passed]
        self.waiting = [p for p in self.waiting if self.prev_user[p.phase] > passed]
        if self.window is not None:
            self.gated.extend(allowed)
            self._release()
            return
        for p in allowed:
            self.ready[(p.core, p.space)].append(p)
        for core in sorted({p.core for p in allowed}):
            self._top_up(core)

    def _release(self) -> None:
        """Queue the gated pieces that start before the frontier on their cores."""
        cores = set()
        while self.gated and self.gated[0].order < self.frontier:
            piece = self.gated.popleft()
            self.ready[(piece.core, piece.space)].append(piece)
            cores.add(piece.core)
        for core in sorted(cores):
            self._top_up(core)

    def _top_up(self, core: int) -> None:
        """Start the loads of the core's next pieces while a staging buffer is free: the
        dma engine takes them and the core goes on (cimc/machine/schedule.py)."""
        for lane in self.lanes[core]:
            while self.free[lane] and self.ready[lane]:
                self._issue(self.ready[lane].popleft())

    def _issue(self, piece: ImagePiece) -> None:
        core, lane = piece.core, (piece.core, piece.space)
        stage = self.free[lane].popleft()
        dst = View("sp", stage.addr, "i8", 1, piece.nbytes)
        src = cols(self.setup.blobs[piece.space], piece.offset, piece.offset + piece.nbytes)
        with self.b.at(self.comments.get(piece.tiles[0][1][0], self.b.loc)):
            self.b.emit(core, "dma", dst, src)
        self.inflight[lane].append((piece, stage, self._last_end))
        self.issued_in[id(piece)] = self.epoch

    def _mload_oldest(self, lane: Lane) -> None:
        core = lane[0]
        piece, stage, arrival = self.inflight[lane].popleft()
        self.clock.wait(core, arrival)  # in-order issue: the mloads wait for the data
        for slot, key, rel in piece.tiles:  # a piece may hold several layers' tiles:
            src = View("sp", stage.addr + rel, "i8", slot.tile.rows, slot.tile.cell_cols)
            self.loaded.add(key)
            with self.b.at(self.comments.get(key[0], self.b.loc)):  # each names its own
                self.b.mload(core, slot.macro, slot.r0, slot.c0, src, key)
        self.free[lane].append(stage)


def _staging(b: ProgramBuilder, core: int, size: int, want: int) -> list[View]:
    """`want` buffers of `size` bytes, fewer (at least two) when they would take more than
    a quarter of the scratchpad: the lowerings need the rest for activations."""
    count = max(2, min(want, b.arch.core.scratchpad_bytes // (4 * size)))
    return [b.alloc(core, "i8", 1, size) for _ in range(count)]


def flash_stages(arch: Arch, size: int, cores: int) -> int:
    """Staging buffers per core that keep the flash channel busy: while one piece is
    transferred, the others' reads must cover the flash latency, so the bytes in flight on
    all `cores` reach latency x bandwidth (Little's law) plus the piece in transfer."""
    latency_bytes = arch.memory.flash_latency_cycles * arch.flash_bytes_per_cycle
    return max(STAGES, math.ceil(latency_bytes / (cores * size)) + 1)


def emit_streaming(
    b: ProgramBuilder,
    graph: Graph,
    plan: StreamPlan | None,
    reserve: int,
    memory: MemoryPlan | None = None,
    own_loads: Collection[str] = (),
) -> StreamSetup | None:
    """Declare the images of `plan` (the map pass's streaming plan of `graph`'s static
    weights) where `memory` puts them (None: all in DRAM) and install the prefetcher on
    `b`; None when there is no plan. `reserve` macros per core (the last ones) stay free
    for run-time operands. The layers of `own_loads` load their weights themselves (sparse
    layers): they keep their slots but leave the images and the prefetcher."""
    if plan is None:
        return None
    layers = {n.name: n.op for n in graph.nodes() if isinstance(n.op, QLinear)}
    names = {name: decl_name(name) for name in layers}
    weights = {name: np.asarray(op.plan.weight) for name, op in layers.items()}
    memory = (memory or in_dram(plan, b.arch)).without(own_loads)
    setup = declare_image(b, plan, weights, names, memory)
    macros = b.arch.core.macros
    setup.reserved = tuple(range(macros - reserve, macros))
    m = b.arch.macro_bytes
    chunk = max(m, min(CHUNK_TILES * m, b.arch.core.scratchpad_bytes // 16))
    comments = {names[n]: " ".join(graph.node(n).where.split()) for n in layers}
    external = {
        (names[e.tile.layer], e.tile.k0, e.tile.k1, e.tile.n0, e.tile.n1): e.phase
        for e in plan.image
        if e.tile.layer in own_loads
    }
    hook = Prefetcher(b, setup, names, chunk, comments, external)
    b.hook = hook
    hook.start()
    return setup


CHUNK_TILES = 4  # tiles per prefetch dma at most (scratchpad / 8 caps it too)
LOOKAHEAD_CYCLES = 81920  # resident weights: DRAM time released ahead of the latest use


def lookahead_bytes(arch: Arch) -> int:
    """Image bytes a resident plan may request ahead of the latest tile needed:
    `LOOKAHEAD_CYCLES` of the DRAM channel. Less and the DRAM idles while a layer's
    attention uses no weight; more and later layers' tiles queue ahead of the current
    one's. The value is the best of a sweep on BERT-base on `large` (benchmarks/FINDINGS.md,
    "Prefetch lookahead window")."""
    return int(LOOKAHEAD_CYCLES * arch.dram_bytes_per_cycle)
