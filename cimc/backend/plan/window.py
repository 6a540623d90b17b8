"""Windowing (`--window K`, "LLM in a flash"): the sparse layers whose rows live in flash.

Why: a layer the memory plan put (partly) in flash stays dense under `exact` alone
(cimc/backend/plan/sparsity.py): a tile's gather of scattered row pieces costs more flash
chunks than the dense stream. With a window, the layer's neuron-major rows stay in flash
as one constant and each run copies the whole rows (contiguous, `dma.m`) of the neurons
that are active now and were not active in the last K runs into a DRAM cache of the
layer's shape (`.state NAME.rows.cache`); the age of each neuron (`.state NAME.rows.age`:
K after a run that used it, one less after each run that did not, 0: not cached) says
which rows the cache holds. The tiles then gather their rows from the cache, as a sparse
layer in DRAM does from its constant (cimc/backend/lower/window_fill.py).

The cache takes DRAM the weight image had: the memory plan is made again without the
cached layers' tiles and with the caches counted as other DRAM data, until every sparse
layer still (partly) in flash is cached.
"""

from __future__ import annotations

from dataclasses import replace

from cimc.backend.plan.memory import MemoryPlan, StoredTile, plan_memory
from cimc.backend.plan.sparsity import SparsityPlan, in_dram_only, masked_source
from cimc.backend.plan.streaming import StreamPlan
from cimc.errors import CimcError
from cimc.ir.graph import Graph
from cimc.machine.arch import Arch
from cimc.quant.dialect import QLinear, QMaskedLinear

MAX_WINDOW = 100  # ages are i8 (cimc/backend/lower/window_fill.py)


def check_window(window: int | None, mode: str) -> None:
    """A window needs sparse layers and fits the ages' dtype."""
    if window is None:
        return
    if not 0 <= window <= MAX_WINDOW:
        raise CimcError(f"window {window} is outside 0..{MAX_WINDOW}", "--window")
    if mode == "none":
        raise CimcError(
            "a window keeps the rows of active neurons; it needs --sparsity exact or predict",
            "--window",
        )


def plan_window(
    graph: Graph,
    sparsity: SparsityPlan,
    stream: StreamPlan,
    memory: MemoryPlan,
    arch: Arch,
    tables: dict[str, int],
) -> tuple[SparsityPlan, MemoryPlan]:
    """Every sparse layer (partly) in flash made sparse through a DRAM cache, and the
    memory plan that leaves room for the caches; when they do not all fit, the last
    layers (graph order) stay dense from flash."""
    if sparsity.window is None:
        return sparsity, memory
    candidates = (*sparsity.layers, *sparsity.predicted, *sparsity.in_flash)
    cached: set[str] = set(sparsity.in_flash)
    dropped: set[str] = set()  # no room for their caches: they stay dense, from flash
    plan = memory
    while cached:
        extra = sum(_cache_bytes(graph, name) for name in cached)
        # the cached layers leave the images (their rows are one flash constant): the
        # DRAM they held goes to the caches, the rest is split again
        rest = replace(stream, image=tuple(e for e in stream.image if e.tile.layer not in cached))
        try:
            planned = plan_memory(rest, arch, memory.dram_other_bytes + extra, tables)
        except CimcError:  # the caches do not fit with the rest: the last layer goes
            victim = [n for n in candidates if n in cached][-1]
            cached.discard(victim)
            dropped.add(victim)
            continue
        plan = _with_flash_tiles(planned, stream, cached)
        more = {n for n in candidates if n not in cached | dropped and not in_dram_only(plan, n)}
        if not more:
            break
        cached |= more
    if not cached:
        plan = memory
    kept = tuple(n for n in candidates if n not in dropped)
    order = tuple(n for n in candidates if n in cached)
    stay = tuple(n for n in candidates if n in dropped)
    planned_sparsity = replace(sparsity, layers=kept, in_flash=stay, cached=order)
    return _split(graph, planned_sparsity), plan


def _split(graph: Graph, sparsity: SparsityPlan) -> SparsityPlan:
    """Masked layers (`--sparsity predict`; candidates too, as a layer in DRAM may move to
    flash when the caches take DRAM) among the sparse ones go back to `predicted`."""
    masked = {n for n in sparsity.layers if isinstance(graph.node(n).op, QMaskedLinear)}
    cached = set(sparsity.cached)
    bundles = []
    for down in sparsity.layers:
        up = masked_source(graph, down) if down in cached and down not in masked else None
        if up is not None and up in cached and _same_neurons(graph, up, down):
            bundles.append((up, down))
    return replace(
        sparsity,
        layers=tuple(n for n in sparsity.layers if n not in masked),
        predicted=tuple(n for n in sparsity.layers if n in masked),
        bundles=tuple(bundles),
    )


def _same_neurons(graph: Graph, up: str, down: str) -> bool:
    """Do the up-projection's columns and the down-projection's rows count the same
    neurons (no reshape between them)?"""
    ups, downs = graph.node(up).op, graph.node(down).op
    assert isinstance(ups, QLinear) and isinstance(downs, QLinear)
    return bool(ups.plan.weight.shape[1] == downs.plan.weight.shape[0])


def _cache_bytes(graph: Graph, name: str) -> int:
    """The cache and the ages of a layer (one per neuron: input rows, or the output
    columns of a masked layer), with declaration alignment."""
    op = graph.node(name).op
    assert isinstance(op, QLinear)
    k, n = op.plan.weight.shape
    return k * n + (n if isinstance(op, QMaskedLinear) else k) + 2 * 64


def _with_flash_tiles(plan: MemoryPlan, stream: StreamPlan, layers: set[str]) -> MemoryPlan:
    """The plan storing every image entry again: those of `layers` (which the lowering
    leaves out, `MemoryPlan.without`) after the flash image, in image order."""
    cores = {t.key: t.core for t in plan.tiles}
    for phase in stream.phases:
        for pt in phase.placement.tiles:
            if pt.copy == 0:
                cores.setdefault((pt.tile.layer, pt.k0, pt.n0), pt.core)
    at = plan.image_bytes("flash")
    stored = {t.entry: t for t in plan.tiles}
    tiles = []
    for e in stream.image:
        if e not in stored:
            key = (e.tile.layer, e.tile.k0, e.tile.n0)
            stored[e] = StoredTile(e, cores[key], "flash", at)
            at += e.nbytes
        tiles.append(stored[e])
    return replace(plan, tiles=tuple(tiles))
