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

The cache takes DRAM the weight image had: the memory plan is made again with the caches
counted as other DRAM data, until every sparse layer still (partly) in flash is cached.
"""

from __future__ import annotations

from dataclasses import replace

from cimc.backend.plan.memory import MemoryPlan, plan_memory
from cimc.backend.plan.sparsity import SparsityPlan, in_dram_only
from cimc.backend.plan.streaming import StreamPlan
from cimc.errors import CimcError
from cimc.ir.graph import Graph
from cimc.machine.arch import Arch
from cimc.quant.dialect import QLinear

MAX_WINDOW = 100  # ages are i8 (cimc/backend/lower/window_fill.py)


def check_window(window: int | None, mode: str) -> None:
    """A window needs sparse layers and fits the ages' dtype."""
    if window is None:
        return
    if not 0 <= window <= MAX_WINDOW:
        raise CimcError(f"window {window} is outside 0..{MAX_WINDOW}", "--window")
    if mode == "none":
        raise CimcError(
            "a window keeps the rows of active neurons; it needs --sparsity exact", "--window"
        )


def plan_window(
    graph: Graph,
    sparsity: SparsityPlan,
    stream: StreamPlan,
    memory: MemoryPlan,
    arch: Arch,
    tables: dict[str, int],
) -> tuple[SparsityPlan, MemoryPlan]:
    """Every exactly sparse layer (partly) in flash made sparse through a DRAM cache, and
    the memory plan that leaves room for the caches."""
    if sparsity.window is None:
        return sparsity, memory
    candidates = (*sparsity.layers, *sparsity.in_flash)
    cached: set[str] = set(sparsity.in_flash)
    plan = memory
    while True:
        if not cached:
            return replace(sparsity, layers=candidates, in_flash=()), plan
        extra = sum(_cache_bytes(graph, name) for name in cached)
        plan = plan_memory(stream, arch, memory.dram_other_bytes + extra, tables)
        more = {n for n in candidates if n not in cached and not in_dram_only(plan, n)}
        if not more:
            break
        cached |= more
    order = tuple(n for n in candidates if n in cached)
    return replace(sparsity, layers=candidates, in_flash=(), cached=order), plan


def _cache_bytes(graph: Graph, name: str) -> int:
    """The cache and the ages of a layer, with declaration alignment."""
    op = graph.node(name).op
    assert isinstance(op, QLinear)
    k, n = op.plan.weight.shape
    return k * n + k + 2 * 64
