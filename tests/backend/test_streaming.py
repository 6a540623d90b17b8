"""Weight streaming: phases fit their banks, the image is in load order, bytes and time."""

from __future__ import annotations

import pytest
from backend_strategies import targets, workloads
from hypothesis import given, settings
from hypothesis import strategies as st

from cimc.backend.plan.streaming import POLICIES, StreamPlan, compare_policies, plan_streaming
from cimc.backend.plan.target import Target, load_target
from cimc.backend.plan.workload import MatmulLayer, TransformerDims, Workload, transformer_workload
from cimc.errors import CimcError

BERT_BASE = TransformerDims(12, 768, 12, 3072, 128)


def assert_plan_valid(plan: StreamPlan, work: Workload, target: Target) -> None:
    # every tile of every layer is in the image exactly once (copies share it)
    loaded = sorted(e.tile.key for e in plan.image)
    assert len(loaded) == len(set(loaded))
    cells = {layer.name: 0 for layer in work.layers}
    for entry in plan.image:
        cells[entry.tile.layer] += entry.nbytes
    assert cells == {layer.name: layer.weight_bytes for layer in work.layers}
    # the image is contiguous and each phase is one contiguous range, in phase order
    offset = 0
    for entry in plan.image:
        assert entry.offset == offset
        offset += entry.nbytes
    for phase in plan.phases:
        inside = [e for e in plan.image if e.phase == phase.index]
        assert inside[0].offset == phase.offset
        assert sum(e.nbytes for e in inside) == phase.nbytes
    # capacity: one image per macro, inside the machine; banks used by streamed phases
    # are disjoint from the pinned bank
    pinned = {s for p in plan.resident for s in p.placement.slots}
    for phase in plan.phases:
        slots = phase.placement.slots
        assert len(slots) == len(set(slots)) <= target.total_macros
        assert all(0 <= c < target.cores and 0 <= m < target.macros_per_core for c, m in slots)
        if phase.bank != -1:
            assert not pinned & set(slots)
    # consecutive streamed phases of a double-buffered plan use disjoint banks
    if plan.policy != "sequential":
        streamed = plan.streamed
        for a, b in zip(streamed, streamed[1:], strict=False):
            assert not set(a.placement.slots) & set(b.placement.slots)
    assert plan.bytes_first_inference == plan.weight_bytes
    assert plan.macro_write_bytes >= plan.weight_bytes
    assert 0.0 < plan.utilization <= 1.0
    assert plan.makespan_estimate >= sum(p.compute_cycles for p in plan.phases)
    assert 0 <= plan.exposed_load_cycles <= plan.load_cycles


@settings(max_examples=40, deadline=None)
@given(
    work=workloads(max_layers=4, max_dim=120),
    target=targets(max_macros=6),
    policy=st.sampled_from(POLICIES),
)
def test_random_plans_are_valid(work: Workload, target: Target, policy: str) -> None:
    try:
        plan = plan_streaming(work, target, policy)  # type: ignore[arg-type]
    except CimcError as e:
        assert "needs at least 2 macros" in str(e) and target.total_macros == 1
        return
    assert_plan_valid(plan, work, target)
    assert plan.bytes_first_inference == work.weight_bytes  # nothing loaded twice
    if policy != "pin-what-fits" and len(plan.phases) > 1:
        assert plan.bytes_per_inference == work.weight_bytes
    assert plan.bytes_per_inference <= work.weight_bytes


def test_bert_base_streams_on_default() -> None:
    target = load_target("default")
    work = transformer_workload(BERT_BASE)
    plans = {p.policy: p for p in compare_policies(work, target)}
    for plan in plans.values():
        assert_plan_valid(plan, work, target)
        assert len(plan.streamed) > 1
        assert plan.bytes_first_inference == work.weight_bytes
    seq, dbl, pin = plans["sequential"], plans["double-buffer"], plans["pin-what-fits"]
    assert seq.bytes_per_inference == dbl.bytes_per_inference == work.weight_bytes
    assert pin.bytes_per_inference < work.weight_bytes
    assert seq.hidden_load_cycles == 0 < dbl.hidden_load_cycles
    assert dbl.makespan_estimate < seq.makespan_estimate
    assert max(len(p.placement.macros) for p in dbl.phases) <= target.total_macros // 2


def test_filling_phases_on_default() -> None:
    target = load_target("default")
    work = transformer_workload(BERT_BASE)
    filled = plan_streaming(work, target, "sequential", fill=True)
    assert_plan_valid(filled, work, target)
    assert len(filled.phases) == 5184 // 64  # every phase uses all 64 macros
    assert filled.split_columns > 0
    assert len(plan_streaming(work, target, "sequential").phases) > len(filled.phases)


def test_bert_base_is_resident_on_large() -> None:
    target = load_target("large")
    work = transformer_workload(BERT_BASE)
    for plan in compare_policies(work, target):
        assert len(plan.phases) == 1 and plan.phases[0].bank == -1
        assert plan.bytes_first_inference == work.weight_bytes
        assert plan.bytes_per_inference == 0 and plan.load_cycles == 0
        assert plan.utilization >= 0.9


def test_odd_dims_on_tiny() -> None:
    target = load_target("tiny")
    work = transformer_workload(TransformerDims(2, 96, 3, 250, 7))
    for plan in compare_policies(work, target):
        assert_plan_valid(plan, work, target)
        assert plan.bytes_first_inference == work.weight_bytes
        assert plan.utilization > 0.95
    dbl = plan_streaming(work, target, "double-buffer")
    # fc2's column (K=250: 8 tiles) exceeds a 4-macro bank: its reduction is split
    assert dbl.split_columns == 2 * 3
    split = {key: p for key, p in dbl.column_phases().items() if len(p) > 1}
    assert sorted(split) == [(f"layer{i}.fc2", nb) for i in range(2) for nb in range(3)]
    assert all(list(p) == list(range(p[0], p[-1] + 1)) for p in split.values())


def chain(vectors: int) -> Workload:
    return Workload(
        tuple(
            MatmulLayer(f"l{i}", 64, 64, vectors, depends_on=(f"l{i - 1}",) if i else ())
            for i in range(6)
        )
    )


def test_double_buffering_wins_when_loads_and_compute_are_comparable() -> None:
    target = Target("t", 1, (1, 1), 4, 32, 32)  # one 64x64 layer (4 tiles) per full phase
    seq = plan_streaming(chain(40), target, "sequential")
    dbl = plan_streaming(chain(40), target, "double-buffer")
    assert len(seq.phases) == 6 and len(dbl.phases) == 12
    assert seq.exposed_load_cycles == seq.load_cycles
    assert dbl.hidden_load_cycles > 0.5 * dbl.load_cycles
    assert dbl.makespan_estimate < seq.makespan_estimate
    assert plan_streaming(chain(40), target, "auto") == dbl


def test_double_buffering_loses_when_compute_dominates() -> None:
    # half the macros per phase doubles compute; the little load time hidden cannot pay
    target = Target("t", 1, (1, 1), 4, 32, 32)
    seq = plan_streaming(chain(512), target, "sequential")
    dbl = plan_streaming(chain(512), target, "double-buffer")
    assert dbl.hidden_load_cycles > 0.8 * dbl.load_cycles
    assert seq.makespan_estimate < dbl.makespan_estimate
    assert plan_streaming(chain(512), target, "auto") == seq


def test_pin_what_fits_keeps_a_resident_prefix() -> None:
    target = Target("t", 2, (2, 1), 8, 32, 32)
    work = transformer_workload(TransformerDims(2, 64, 2, 128, tokens=1, context=16))
    plan = plan_streaming(work, target, "pin-what-fits", pin_fraction=0.5)
    assert plan.phases[0].bank == -1 and len(plan.phases[0].placement.macros) <= 8
    pinned = {e.tile.layer for e in plan.image if e.phase == 0}
    assert "layer0.q" in pinned
    assert plan.bytes_per_inference == work.weight_bytes - plan.phases[0].nbytes
    assert plan.phases[0].offset == 0  # the resident set leads the image


def test_unknown_policy_is_a_user_error() -> None:
    with pytest.raises(CimcError, match="unknown streaming policy 'lru'"):
        plan_streaming(Workload((MatmulLayer("a", 4, 4, 1),)), load_target("tiny"), "lru")  # type: ignore[arg-type]


DECODE = transformer_workload(TransformerDims(2, 128, 4, 512, tokens=1, context=16))
DECODE_TARGET = Target("t", 2, (2, 1), 8, 32, 32)


def test_pinning_more_streams_fewer_bytes_per_token() -> None:
    half = plan_streaming(DECODE, DECODE_TARGET, "pin-what-fits", pin_fraction=0.5)
    most = plan_streaming(DECODE, DECODE_TARGET, "pin-what-fits", pin_fraction=0.75)
    for plan in (half, most):
        assert_plan_valid(plan, DECODE, DECODE_TARGET)
    assert len(half.resident[0].placement.macros) == 8  # 4 of 8 macros a core
    assert len(most.resident[0].placement.macros) == 12
    assert most.bytes_per_inference == DECODE.weight_bytes - 12 * 1024
    assert most.bytes_per_inference < half.bytes_per_inference < DECODE.weight_bytes


def test_auto_is_no_slower_than_any_policy() -> None:
    best = plan_streaming(DECODE, DECODE_TARGET, "auto")
    others = [plan_streaming(DECODE, DECODE_TARGET, p) for p in POLICIES]
    others.append(plan_streaming(DECODE, DECODE_TARGET, "pin-what-fits", pin_fraction=0.75))
    assert all(best.makespan_estimate <= p.makespan_estimate for p in others)
    assert best.policy in POLICIES


def test_reserved_macros_stay_free_for_runtime_operands() -> None:
    plan = plan_streaming(DECODE, DECODE_TARGET, "double-buffer", reserve_per_core=2)
    assert_plan_valid(plan, DECODE, DECODE_TARGET)
    assert all(m < 6 for p in plan.phases for _, m in p.placement.slots)
    resident = plan_streaming(chain(1), Target("t", 1, (1, 1), 32, 32, 32), reserve_per_core=8)
    assert resident.resident and all(m < 24 for _, m in resident.phases[0].placement.slots)
    with pytest.raises(CimcError, match="reserve_per_core=8 leaves no weight macros"):
        plan_streaming(DECODE, DECODE_TARGET, reserve_per_core=8)


@settings(max_examples=30, deadline=None)
@given(
    dims=st.lists(st.tuples(st.integers(1, 12), st.integers(1, 12)), min_size=1, max_size=3),
    macros=st.integers(1, 6),
)
def test_sequential_phases_close_only_when_the_next_column_does_not_fit(
    dims: list[tuple[int, int]], macros: int
) -> None:
    # dims in whole 8x8 tiles: every tile is full, so capacity counts tiles
    work = Workload(tuple(MatmulLayer(f"l{i}", 8 * k, 8 * n, 1) for i, (k, n) in enumerate(dims)))
    target = Target("t", 1, (1, 1), macros, 8, 8)
    plan = plan_streaming(work, target, "sequential")
    assert all(len(p.placement.macros) <= macros for p in plan.phases)
    filled = plan_streaming(work, target, "sequential", fill=True)
    tiles = len(filled.image)
    if tiles > macros:  # streamed: every phase but the last is full
        assert len(filled.phases) == -(-tiles // macros)
        assert filled.bytes_first_inference == work.weight_bytes
    if len(plan.phases) == 1:
        return
    assert len(plan.phases) >= -(-len(plan.image) // macros)
    for a, b in zip(plan.phases, plan.phases[1:], strict=False):
        head = next(e.tile for e in plan.image if e.phase == b.index)
        column = work.item(head.layer).k // 8  # type: ignore[union-attr]
        if column <= macros and head.kb == 0:  # whole column started a new phase
            assert len(a.placement.macros) + column > macros


def test_duplicates_are_stored_once_but_read_and_written_per_copy() -> None:
    target = Target("t", 2, (2, 1), 4, 32, 32)
    work = Workload((MatmulLayer("a", 32, 32, 8), MatmulLayer("b", 64, 64, 8, depends_on=("a",))))
    plan = plan_streaming(work, target, "sequential", duplicate=True)
    assert plan.phases[0].placement.duplicated == (("a", 2),)  # one copy per core
    assert plan.bytes_first_inference == work.weight_bytes == 5 * 1024  # the image
    assert plan.macro_write_bytes == 6 * 1024
    assert plan.copy_bytes == 1024  # the copy of a reads a's tile again
    alone = plan_streaming(work, target, "sequential")
    assert plan.makespan_estimate < alone.makespan_estimate  # a's vectors split 2 ways
    assert plan.first_makespan_estimate - plan.makespan_estimate > (
        alone.first_makespan_estimate - alone.makespan_estimate
    )  # the first inference loads the copy too
