"""plan_values(..., stages=...) (cimc/backend/builder/values.py): in a pipeline, a value
touched by one stage reuses only bytes of values of that same stage (never while one of
them is live), a value touched by two stages shares its bytes with no other value, and a
batch-carrying value of one stage holds one micro-batch's rows (`per_micro`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from cimc.backend.builder.values import (
    GB_SHARE,
    MICRO_BUFFERS,
    REUSE_LAG,
    ValuePlan,
    machine_dtype,
    plan_values,
    rows_cols,
)
from cimc.backend.plan.micro_batch import MicroBatches, split_batch
from cimc.backend.plan.pipeline import emits_code
from cimc.ir.graph import Graph
from cimc.ir.ops import Reshape
from cimc.machine.arch import Arch, arch_from_dict, load_arch, read_arch_toml
from cimc.machine.program import DTYPE_BYTES
from tests.differential.zoo_graphs import quantized, zoo_graph


@dataclass(frozen=True)
class Slot:
    name: str
    space: str
    start: int
    end: int  # bytes [start, end)
    born: int  # index of the producing node
    dies: int  # index of the last reader (len(nodes) for graph outputs)
    stages: frozenset[int]  # stages of the nodes that write or read it (or its re-views)


def _stage_map(graph: Graph, count: int) -> dict[str, int]:
    """The code-emitting nodes cut into `count` contiguous runs of equal length."""
    names = [n.name for n in graph.nodes() if emits_code(n)]
    return {name: k * count // len(names) for k, name in enumerate(names)}


def _slots(
    graph: Graph, plan: ValuePlan, stages: dict[str, int], micro: MicroBatches | None = None
) -> list[Slot]:
    """Every pool value with its bytes (MICRO_BUFFERS of one micro-batch's rows for a
    per_micro slot), live range and stages, computed from the graph."""
    nodes = graph.nodes()
    index = {n.name: i for i, n in enumerate(nodes)}
    root: dict[str, str] = {}
    for n in nodes:
        root[n.name] = root[n.inputs[0]] if isinstance(n.op, Reshape) else n.name
    touched: dict[str, set[int]] = {}
    dies: dict[str, int] = {}
    outputs = {root[v] for _, v in graph.outputs}
    for n in nodes:
        for v in (n.name, *n.inputs):
            if n.name in stages:
                touched.setdefault(root[v], set()).add(stages[n.name])
        for v in n.inputs:
            dies[root[v]] = max(dies.get(root[v], 0), index[n.name])
    out = []
    for n in nodes:
        slot = plan.slots[n.name]
        if slot.kind != "pool":
            continue
        shaped = micro.micro.node(n.name) if slot.per_micro and micro is not None else n
        r, c = rows_cols(shaped.type.shape)
        size = r * c * DTYPE_BYTES[machine_dtype(n)] * (MICRO_BUFFERS if slot.per_micro else 1)
        end = len(nodes) if n.name in outputs else dies.get(n.name, index[n.name])
        stages_of = frozenset(touched.get(n.name, set()))
        out.append(Slot(n.name, slot.space, slot.offset, slot.offset + size, index[n.name], end,
                        stages_of))  # fmt: skip
    return out


def _overlap(a: Slot, b: Slot) -> bool:
    return a.space == b.space and a.start < b.end and b.start < a.end


@pytest.fixture(scope="module")
def bert() -> Graph:
    return quantized(zoo_graph("bert", 2, 8))


@pytest.mark.parametrize("count", [2, 3])
def test_stage_pools_never_share_bytes_across_stages(bert: Graph, count: int) -> None:
    stages = _stage_map(bert, count)
    micro = split_batch(bert)
    plan = plan_values(bert, load_arch("default"), stages=stages, micro=micro)
    slots = _slots(bert, plan, stages, micro)
    crossing = [s for s in slots if len(s.stages) > 1]
    assert crossing  # values passed from stage to stage exist (else the test proves nothing)
    shared = 0
    for i, a in enumerate(slots):
        for b in slots[i + 1 :]:
            if not _overlap(a, b):
                continue
            shared += 1
            assert len(a.stages) == len(b.stages) == 1, (a, b)  # a crossing value: private
            assert a.stages == b.stages, (a, b)  # one stage's pool
            assert a.dies < b.born or b.dies < a.born, (a, b)  # never both live
    assert shared  # a stage's pool does reuse its own slots
    for space, size in plan.pool_bytes.items():  # every slot inside its declared pool
        assert all(s.end <= size for s in slots if s.space == space)
    assert {s.space for s in slots} <= set(plan.pool_bytes)


def test_without_stages_values_of_different_stages_do_share(bert: Graph) -> None:
    """The spread plan reuses slots across what would be stages: the property above is
    the staged plan's doing, not a given of the graph."""
    stages = _stage_map(bert, 2)
    slots = _slots(bert, plan_values(bert, load_arch("default")), stages)
    assert any(
        _overlap(a, b) and a.stages != b.stages for i, a in enumerate(slots) for b in slots[i + 1 :]
    )


def test_one_stage_batch_values_hold_one_micro_batch(bert: Graph) -> None:
    """Exactly the pooled values of one stage that carry the batch are per_micro; their
    slots are the micro-batch's size, the crossing values' the whole batch's."""
    stages = _stage_map(bert, 2)
    micro = split_batch(bert)
    assert micro.count == 2
    plan = plan_values(bert, load_arch("default"), stages=stages, micro=micro)
    slots = {s.name: s for s in _slots(bert, plan, stages, micro)}
    per = {name for name in slots if plan.slots[name].per_micro}
    want = {n for n, s in slots.items() if len(s.stages) == 1 and micro.carries(n)}
    assert per == want and per and set(slots) - per  # both kinds exist
    for name in per:
        whole = rows_cols(bert.node(name).type.shape)[0]
        assert rows_cols(micro.micro.node(name).type.shape)[0] * 2 == whole


def _gb_for(cap: int, at_least: bool) -> Arch:
    """`default` with a gb (a multiple of 8 bytes) whose activation share (GB_SHARE) is at
    least `cap` bytes, or at most."""
    eighths = cap / GB_SHARE / 8
    data = read_arch_toml("default")
    data["memory"]["gb_bytes"] = 8 * (math.ceil(eighths) if at_least else math.floor(eighths))
    return arch_from_dict(data, f"<default, about {cap} activation bytes of gb>")


def test_when_the_pools_outgrow_gb_the_passed_values_go_to_dram_first(bert: Graph) -> None:
    """A stage whose own pool is in DRAM becomes the pipe's slowest; the values passed
    between stages are written and read once each way, so they spill first."""
    stages, micro = _stage_map(bert, 2), split_batch(bert)
    fits = plan_values(bert, load_arch("default"), 0, stages, micro)
    assert set(fits.pool_bytes) == {"gb"}
    tight = plan_values(bert, _gb_for(fits.pool_bytes["gb"] - 1, False), 0, stages, micro)
    slots = _slots(bert, tight, stages, micro)
    assert {s.space for s in slots if len(s.stages) > 1} == {"dram"}
    assert {s.space for s in slots if len(s.stages) == 1} == {"gb"}


def test_staged_pools_drop_the_reuse_lag_rather_than_spill(bert: Graph) -> None:
    stages, micro = _stage_map(bert, 2), split_batch(bert)
    unlagged = plan_values(bert, load_arch("default"), 0, stages, micro).pool_bytes["gb"]
    arch = _gb_for(unlagged, True)
    lagged = plan_values(bert, arch, REUSE_LAG, stages, micro)
    assert "dram" in lagged.pool_bytes  # the lag needs more than the room there is
    assert set(plan_values(bert, arch, stages=stages, micro=micro).pool_bytes) == {"gb"}
