"""Weight streaming in emitted programs: the planner's phases, prefetched ahead of need.

`StreamSetup` turns a `StreamPlan` (cimc/backend/plan/streaming.py) into program objects: one
`weights.img` constant holding every weight tile in load order (so a phase is one
contiguous range of the image), the tile slots of every layer (their phase placement),
and the macros left free for run-time operands (attention K^T / V, matmuls).

`Prefetcher` emits the loads. Each core's tiles of a phase are cut into pieces (tiles
contiguous in the image, up to `chunk` bytes): one `dma` of the piece into one of the
core's `STAGES` scratchpad staging buffers, later one `mload` per tile. A phase is queued
once the macros of its bank are free in program order: the previous phase on that bank
has been passed (a later phase is in use) or used up by the graph nodes lowered so far
(`node_done`). So under `double-buffer` phase i+1 loads while phase i computes, under
`sequential` only when phase i is done, and resident (pinned) phases load from the start.
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
Correctness never depends on this: the builder tracks what each macro holds and
`TileLoader` reloads any tile that is not there.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from cimc.backend.builder.alloc import cols
from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.builder.values import decl_name
from cimc.backend.plan.mapping import PlacedTile
from cimc.backend.plan.streaming import StreamPlan
from cimc.backend.stream.clock import EmitClock
from cimc.ir.graph import Graph
from cimc.machine.arch import Arch
from cimc.machine.program import Instr, View
from cimc.quant.dialect import QLinear

IMAGE = "weights.img"
STAGES = 3  # staging buffers per core: pieces loaded ahead of their first use
TileId = tuple[str, int, int, int, int]  # (constant-name prefix of the layer, k0, k1, n0, n1)


@dataclass(frozen=True)
class ImagePiece:
    """Tiles of one core and phase, contiguous in the image: one dma, then mloads."""

    core: int
    phase: int
    offset: int  # in the image
    nbytes: int
    layer: int  # program position of its first tile's layer
    tiles: tuple[tuple[PlacedTile, TileId, int], ...]  # (slot, key, offset in the piece)


@dataclass
class StreamSetup:
    """What the lowerings need of a streamed program: the image, each layer's tiles."""

    plan: StreamPlan
    blob: View
    slots: dict[str, tuple[PlacedTile, ...]]  # graph node name -> its tiles' slots
    image: dict[tuple[int, int, int, int], View] = field(default_factory=dict)
    reserved: tuple[int, ...] = ()  # macro indices left for run-time operands


def declare_image(
    b: ProgramBuilder, plan: StreamPlan, weights: dict[str, np.ndarray], names: dict[str, str]
) -> StreamSetup:
    """The load-ordered image constant (every tile row-major at its offset) and slots.
    `weights[layer]` is the int8 [K x N] weight; `names[layer]` its constant prefix."""
    total = sum(e.nbytes for e in plan.image)
    data = np.zeros((1, max(total, 1)), np.int8)
    for e in plan.image:
        t = e.tile
        data[0, e.offset : e.offset + t.cells] = weights[t.layer][t.k0 : t.k1, t.n0 : t.n1].ravel()
    blob = b.const(IMAGE, data, "i8")
    slots: dict[str, list[PlacedTile]] = {}
    for phase in plan.phases:
        for pt in phase.placement.tiles:
            if pt.copy == 0:
                slots.setdefault(pt.tile.layer, []).append(pt)
    for e in plan.image:  # a readable map of the image in the program header
        t = e.tile
        b.note(f"{IMAGE}+{e.offset}: {names[t.layer]}.w[{t.k0}:{t.k1}, {t.n0}:{t.n1}]")
    return StreamSetup(plan, blob, {k: tuple(v) for k, v in slots.items()})


def layer_image(setup: StreamSetup, layer: str) -> dict[tuple[int, int, int, int], View]:
    """Tile views of `layer` into the image (its `weight_image` for lower_linear)."""
    out = {}
    for e in setup.plan.image:
        t = e.tile
        if t.layer == layer:
            view = cols(setup.blob, e.offset, e.offset + t.cells)
            out[(t.k0, t.k1, t.n0, t.n1)] = View(
                view.space, view.addr, "i8", t.rows, t.cols, symbol=view.symbol, offset=view.offset
            )
    return out


def _pieces(setup: StreamSetup, names: dict[str, str], chunk: int) -> list[ImagePiece]:
    """Per phase, per core: consecutive image tiles of one core, up to `chunk` bytes."""
    where = {}
    for phase in setup.plan.phases:
        for pt in phase.placement.tiles:
            if pt.copy == 0:
                where[(pt.tile.layer, pt.k0, pt.n0)] = pt
    layer_index = {names[e.tile.layer]: e.tile.layer_index for e in setup.plan.image}
    pieces: list[ImagePiece] = []
    run: list[tuple[PlacedTile, TileId, int]] = []
    start = phase_of = end = -1

    def close() -> None:
        if run:
            layer = layer_index[run[0][1][0]]
            pieces.append(
                ImagePiece(run[0][0].core, phase_of, start, end - start, layer, tuple(run))
            )

    for e in setup.plan.image:
        t, slot = e.tile, where[(e.tile.layer, e.tile.k0, e.tile.n0)]
        key = (names[t.layer], t.k0, t.k1, t.n0, t.n1)
        joins = run and run[0][0].core == slot.core and e.phase == phase_of and e.offset == end
        if not joins or end + t.cells - start > chunk:
            close()
            run, start, phase_of = [], e.offset, e.phase
        run.append((slot, key, e.offset - start))
        end = e.offset + t.cells
    close()
    return pieces


class Prefetcher:
    """Builder hook that streams the weight image into the macros (see the module doc)."""

    def __init__(
        self,
        b: ProgramBuilder,
        setup: StreamSetup,
        names: dict[str, str],
        chunk: int,
        comments: dict[str, str],
    ) -> None:
        self.b, self.setup = b, setup
        pieces = _pieces(setup, names, chunk)
        self.phase_of = {key: p.phase for p in pieces for _, key, _ in p.tiles}
        self.piece_of = {key: p for p in pieces for _, key, _ in p.tiles}
        phases = setup.plan.phases
        self.prev_user: list[int] = []  # the previous phase on the same bank, or -2
        for i, ph in enumerate(phases):
            same = [j for j in range(i) if phases[j].bank == ph.bank and ph.bank != -1]
            self.prev_user.append(same[-1] if same else -2)
        self.waiting: list[ImagePiece] = pieces  # not yet allowed (bank busy), load order
        self.ready: dict[int, deque[ImagePiece]] = {}  # per core, load order
        self.inflight: dict[int, deque[tuple[ImagePiece, View, int]]] = {}  # + estimated arrival
        self.loaded: set[TileId] = set()
        self.current = -1
        self.used: set[TileId] = set()
        self.unused = [0] * len(phases)  # per phase: tiles not needed yet
        for p in pieces:
            self.unused[p.phase] += len(p.tiles)
        self.finished = -1  # every phase up to this one is used by nodes already lowered
        cores = sorted({p.core for p in pieces})
        size = max((p.nbytes for p in pieces), default=1)
        self.free = {c: deque(_staging(b, c, size)) for c in cores}
        for c in cores:
            self.ready[c], self.inflight[c] = deque(), deque()
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
        piece = self.piece_of.get(key)  # type: ignore[call-overload]
        if piece is None:
            return
        if key not in self.used:
            self.used.add(key)  # type: ignore[arg-type]
            self.unused[piece.phase] -= 1
        if piece.phase > self.current:
            self.current = piece.phase
            self._allow()
        if self.window is not None and piece.offset + self.window > self.frontier:
            self.frontier = piece.offset + self.window
            self._release()
        core = piece.core
        while key not in self.loaded:
            if self.inflight[core] and (not self.free[core] or self._held(core, piece)):
                self._mload_oldest(core)
            elif self.ready[core]:
                self._issue(self.ready[core].popleft())
            else:  # not loadable here: TileLoader loads it itself
                break
        self._top_up(core)

    def before(self, core: int, instr: Instr) -> None:
        """A recv is about to be emitted: the core will wait for it anyway, so the pieces
        that arrive meanwhile are mloaded (and their buffers refilled) before it."""
        if instr.opcode == "recv":
            self._fill(core, self.clock.recv_done(core, instr))

    def emitted(self, core: int, instr: Instr) -> None:
        """Every instruction: move the clock; mload the pieces that have arrived by now."""
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
            held = self.inflight.get(core, ())
            old = [at for p, _, at in held if self.issued_in[id(p)] < self.epoch - 1]
            self._fill(core, max([release, *old]))
        self.clock.barrier(cores)

    def _fill(self, core: int, until: int) -> None:
        """mload the core's pieces that arrive by `until`, refilling their buffers."""
        if self._placing or core not in self.inflight:
            return
        self._placing = True
        try:
            arrived = self.inflight[core]
            while True:
                while arrived and arrived[0][2] <= until:
                    self._mload_oldest(core)
                before = len(arrived)
                self._top_up(core)
                if len(arrived) == before or arrived[0][2] > until:
                    break
        finally:
            self._placing = False

    def node_done(self) -> None:
        """A graph node is lowered: the phases it used up free their banks for the next
        ones (without waiting for the next phase's first tile)."""
        old = self.finished
        while self.finished + 1 < len(self.unused) and self.unused[self.finished + 1] == 0:
            self.finished += 1
        if self.finished != old:
            self._allow()

    # ---------------------------------------------------------------- emission
    def _held(self, core: int, piece: ImagePiece) -> bool:
        return any(p is piece for p, _, _ in self.inflight[core])

    def _allow(self) -> None:
        """Queue the phases whose bank is free (its previous phase has been passed)."""
        passed = max(self.current - 1, self.finished)
        allowed = [p for p in self.waiting if self.prev_user[p.phase] <= passed]
        self.waiting = [p for p in self.waiting if self.prev_user[p.phase] > passed]
        if self.window is not None:
            self.gated.extend(allowed)
            self._release()
            return
        for p in allowed:
            self.ready[p.core].append(p)
        for core in sorted({p.core for p in allowed}):
            self._top_up(core)

    def _release(self) -> None:
        """Queue the gated pieces that start before the frontier on their cores."""
        cores = set()
        while self.gated and self.gated[0].offset < self.frontier:
            piece = self.gated.popleft()
            self.ready[piece.core].append(piece)
            cores.add(piece.core)
        for core in sorted(cores):
            self._top_up(core)

    def _top_up(self, core: int) -> None:
        """Start the loads of the core's next pieces while a staging buffer is free: the
        dma engine takes them and the core goes on (cimc/machine/schedule.py)."""
        while self.free[core] and self.ready[core]:
            self._issue(self.ready[core].popleft())

    def _issue(self, piece: ImagePiece) -> None:
        core = piece.core
        stage = self.free[core].popleft()
        dst = View("sp", stage.addr, "i8", 1, piece.nbytes)
        src = cols(self.setup.blob, piece.offset, piece.offset + piece.nbytes)
        with self.b.at(self.comments.get(piece.tiles[0][1][0], self.b.loc)):
            self.b.emit(core, "dma", dst, src)
        self.inflight[core].append((piece, stage, self._last_end))
        self.issued_in[id(piece)] = self.epoch

    def _mload_oldest(self, core: int) -> None:
        piece, stage, arrival = self.inflight[core].popleft()
        self.clock.wait(core, arrival)  # in-order issue: the mloads wait for the data
        for slot, key, rel in piece.tiles:  # a piece may hold several layers' tiles:
            src = View("sp", stage.addr + rel, "i8", slot.k1 - slot.k0, slot.n1 - slot.n0)
            self.loaded.add(key)
            with self.b.at(self.comments.get(key[0], self.b.loc)):  # each names its own
                self.b.mload(core, slot.macro, slot.r0, slot.c0, src, key)
        self.free[core].append(stage)


def _staging(b: ProgramBuilder, core: int, size: int) -> list[View]:
    """STAGES buffers of `size` bytes, fewer (at least two) when they would take more than a
    quarter of the scratchpad: the lowerings need the rest for activations."""
    count = max(2, min(STAGES, b.arch.core.scratchpad_bytes // (4 * size)))
    return [b.alloc(core, "i8", 1, size) for _ in range(count)]


def emit_streaming(
    b: ProgramBuilder, graph: Graph, plan: StreamPlan | None, reserve: int
) -> StreamSetup | None:
    """Declare the image of `plan` (the map pass's streaming plan of `graph`'s static
    weights) and install the prefetcher on `b`; None when there is no plan. `reserve`
    macros per core (the last ones) stay free for run-time operands."""
    if plan is None:
        return None
    layers = {n.name: n.op for n in graph.nodes() if isinstance(n.op, QLinear)}
    names = {name: decl_name(name) for name in layers}
    weights = {name: np.asarray(op.plan.weight) for name, op in layers.items()}
    setup = declare_image(b, plan, weights, names)
    macros = b.arch.core.macros
    setup.reserved = tuple(range(macros - reserve, macros))
    m = b.arch.macro_bytes
    chunk = max(m, min(CHUNK_TILES * m, b.arch.core.scratchpad_bytes // 16))
    comments = {names[n]: " ".join(graph.node(n).where.split()) for n in layers}
    hook = Prefetcher(b, setup, names, chunk, comments)
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
