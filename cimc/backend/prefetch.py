"""Weight streaming in emitted programs: the planner's phases, prefetched ahead of need.

`StreamSetup` turns a `StreamPlan` (cimc/backend/streaming.py) into program objects: one
`weights.img` constant holding every weight tile in load order (so a phase is one
contiguous range of the image), the tile slots of every layer (their phase placement),
and the macros left free for run-time operands (attention K^T / V, matmuls).

`Prefetcher` emits the loads. Each core's tiles of a phase are cut into pieces (tiles
contiguous in the image, up to `chunk` bytes): one `dma` of the piece into one of two
scratchpad staging buffers, then one `mload` per tile. A phase is queued once the macros
of its bank are free in program order (the previous phase on that bank has been passed),
so under `double-buffer` phase i+1 loads while phase i computes, under `sequential` only
when phase i is done, and resident (pinned) phases load from the start.

When to emit a queued piece: cores issue in order, so a `dma` waiting for the DRAM
channel stalls everything behind it on its core, and a barrier waits for every dma in
flight. Emitting loads early on an estimated clock (tried: a per-core clock from the cost
model, loads issued when the channel would idle) measured slower than loading just in
time, because of those two rules. So a piece is emitted when one of its tiles is needed
(`need`, from `TileLoader.ensure`), together with the next `AHEAD` queued piece of the
same core: that load overlaps the MVMs of the tiles just loaded, as the tile loader's
own depth-2 pipeline does, but across layer boundaries and from one image.
Correctness never depends on this: the builder tracks what each macro holds and
`TileLoader` reloads any tile that is not there.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cimc.backend.asm import ProgramBuilder
from cimc.backend.asm_alloc import cols
from cimc.backend.from_graph import workload_from_graph
from cimc.backend.lower_tiles import TileSlot
from cimc.backend.streaming import POLICIES, Policy, StreamPlan, plan_streaming
from cimc.backend.target import Target
from cimc.backend.values import decl_name
from cimc.errors import CimcError
from cimc.ir.graph import Graph
from cimc.machine.arch import Arch
from cimc.machine.program import View

IMAGE = "weights.img"
AHEAD = 1  # pieces of the same core issued beyond the one a tile needs
TileId = tuple[str, int, int, int, int]  # (constant-name prefix of the layer, k0, k1, n0, n1)


@dataclass(frozen=True)
class Piece:
    """Tiles of one core and phase, contiguous in the image: one dma, then mloads."""

    core: int
    phase: int
    offset: int  # in the image
    nbytes: int
    layer: int  # program position of its first tile's layer
    tiles: tuple[tuple[TileSlot, TileId, int], ...]  # (slot, key, offset in the piece)


@dataclass
class StreamSetup:
    """What compile_graph needs to emit a streamed program."""

    plan: StreamPlan
    blob: View
    slots: dict[str, tuple[TileSlot, ...]]  # graph node name -> its tiles' slots
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
    slots: dict[str, list[TileSlot]] = {}
    for phase in plan.phases:
        for pt in phase.placement.tiles:
            if pt.copy == 0:
                t = pt.tile
                slot = TileSlot(t.k0, t.k1, t.n0, t.n1, pt.core, pt.macro, pt.r0, pt.c0)
                slots.setdefault(t.layer, []).append(slot)
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


def _pieces(setup: StreamSetup, names: dict[str, str], chunk: int) -> list[Piece]:
    """Per phase, per core: consecutive image tiles of one core, up to `chunk` bytes."""
    where = {}
    for phase in setup.plan.phases:
        for pt in phase.placement.tiles:
            if pt.copy == 0:
                t = pt.tile
                where[(t.layer, t.k0, t.n0)] = TileSlot(
                    t.k0, t.k1, t.n0, t.n1, pt.core, pt.macro, pt.r0, pt.c0
                )
    layer_index = {names[e.tile.layer]: e.tile.layer_index for e in setup.plan.image}
    pieces: list[Piece] = []
    run: list[tuple[TileSlot, TileId, int]] = []
    start = phase_of = end = -1

    def close() -> None:
        if run:
            layer = layer_index[run[0][1][0]]
            pieces.append(Piece(run[0][0].core, phase_of, start, end - start, layer, tuple(run)))

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
        phases = setup.plan.phases
        self.prev_user: list[int] = []  # the previous phase on the same bank, or -2
        for i, ph in enumerate(phases):
            same = [j for j in range(i) if phases[j].bank == ph.bank and ph.bank != -1]
            self.prev_user.append(same[-1] if same else -2)
        self.waiting: list[Piece] = pieces  # not yet allowed (bank busy), load order
        self.ready: deque[Piece] = deque()
        self.inflight: dict[int, tuple[Piece, View]] = {}  # dma emitted, mloads not yet
        self.loaded: set[TileId] = set()
        self.current = -1
        cores = sorted({p.core for p in pieces})
        size = max((p.nbytes for p in pieces), default=1)
        self.staging = {c: [b.alloc(c, "i8", 1, size) for _ in range(2)] for c in cores}
        self.turn = dict.fromkeys(cores, 0)
        self.comments = comments  # constant prefix -> its node's comment (load provenance)
        self._allow()

    # ---------------------------------------------------------------- builder hooks
    def owns(self, key: object) -> bool:
        """Will the prefetcher still load this tile (a loader need not stage it)?"""
        return key in self.phase_of and key not in self.loaded

    def need(self, core: int, key: object) -> None:
        """A tile is about to be used on `core`: its phase (and earlier) must be loaded."""
        phase = self.phase_of.get(key)  # type: ignore[call-overload]
        if phase is None:
            return
        if phase > self.current:
            self.current = phase
            self._allow()
        for piece in [p for p in self.ready if p.core == core and p.phase <= phase]:
            self.ready.remove(piece)
            self._issue(piece)
        held = self.inflight.get(core)
        if held is not None and held[0].phase <= phase:
            self._mloads(core)
        for piece in [p for p in self.ready if p.core == core][:AHEAD]:
            self.ready.remove(piece)
            self._issue(piece)

    # ---------------------------------------------------------------- emission
    def _allow(self) -> None:
        """Queue the phases whose bank is free (its previous phase has been passed)."""
        allowed = [p for p in self.waiting if self.prev_user[p.phase] < self.current]
        self.waiting = [p for p in self.waiting if self.prev_user[p.phase] >= self.current]
        self.ready.extend(allowed)

    def _issue(self, piece: Piece) -> None:
        core = piece.core
        stage = self.staging[core][self.turn[core]]
        self.turn[core] ^= 1
        dst = View("sp", stage.addr, "i8", 1, piece.nbytes)
        src = cols(self.setup.blob, piece.offset, piece.offset + piece.nbytes)
        with self.b.at(self.comments.get(piece.tiles[0][1][0], self.b.loc)):
            self.b.emit(core, "dma", dst, src)
            self._mloads(core)
        self.inflight[core] = (piece, stage)

    def _mloads(self, core: int) -> None:
        held = self.inflight.pop(core, None)
        if held is None:
            return
        piece, stage = held
        for slot, key, rel in piece.tiles:
            src = View("sp", stage.addr + rel, "i8", slot.k1 - slot.k0, slot.n1 - slot.n0)
            self.loaded.add(key)
            self.b.mload(core, slot.macro, slot.r0, slot.c0, src, key)

    def pending(self) -> Sequence[Piece]:
        return [*self.waiting, *self.ready]


def setup_streaming(b: ProgramBuilder, graph: Graph, policy: Policy) -> StreamSetup | None:
    """Plan the static weights of `graph` under `policy`, declare the image and install
    the prefetcher on `b`; None when the graph has no static-weight layer."""
    if policy not in (*POLICIES, "auto"):
        choices = ", ".join((*POLICIES, "auto"))
        raise CimcError(f"unknown streaming policy {policy!r}; use one of {choices}", "streaming")
    layers = {n.name: n for n in graph.nodes() if n.op.NAME == "q.linear"}
    if not layers:
        return None
    workload = workload_from_graph(graph)
    target = _target(b)
    reserve = reserved_macros(graph, b.arch)
    plan = plan_streaming(workload, target, policy, reserve_per_core=reserve, cold=True)
    if policy == "auto" and not plan.streamed:
        return None  # everything fits: per-layer loading just in time (measured faster)
    names = {name: decl_name(name) for name in layers}
    weights = {name: np.asarray(node.op.plan.weight) for name, node in layers.items()}  # type: ignore[attr-defined]
    setup = declare_image(b, plan, weights, names)
    macros = b.arch.core.macros
    setup.reserved = tuple(range(macros - reserve, macros))
    m = b.arch.macro_bytes
    chunk = max(m, min(CHUNK_TILES * m, b.arch.core.scratchpad_bytes // 16))
    comments = {names[n]: " ".join(node.where.split()) for n, node in layers.items()}
    b.hook = Prefetcher(b, setup, names, chunk, comments)
    return setup


CHUNK_TILES = 4  # tiles per prefetch dma at most (scratchpad / 8 caps it too)


def _target(b: ProgramBuilder) -> Target:
    return Target.from_arch(b.arch)


def reserved_macros(graph: Graph, arch: Arch) -> int:
    """Macros per core kept from the weights for run-time operands: the K^T and V tiles of
    one attention head, or a matmul's right operand (at most all macros but one)."""
    rows, cols = arch.macro.rows, arch.macro.cols
    need = 0
    for node in graph.nodes():
        shapes = graph.input_types(node)
        if node.op.NAME in ("q.attention", "decode.attention"):
            d, sk, dv = shapes[0].shape[-1], shapes[1].shape[-2], shapes[2].shape[-1]
            sk = getattr(node.op, "capacity", sk)  # decode: the keys are the whole KV cache
            need = max(need, _tiles(d, sk, rows, cols) + _tiles(sk, dv, rows, cols))
        elif node.op.NAME == "q.matmul":
            need = max(need, _tiles(shapes[1].shape[-2], shapes[1].shape[-1], rows, cols))
    return min(need, arch.core.macros - 1)


def _tiles(k: int, n: int, rows: int, cols: int) -> int:
    return -(-k // rows) * -(-n // cols)
