"""Lower bound: hand-computed terms, the exact compute split, and no plan beats it."""

from __future__ import annotations

import pytest
from backend_strategies import targets, workloads
from hypothesis import given, settings
from hypothesis import strategies as st

from cimc.backend.plan.bounds import _split_bound, lower_bound, min_duration
from cimc.backend.plan.streaming import POLICIES, compare_policies, plan_streaming
from cimc.backend.plan.target import Target, load_target
from cimc.backend.plan.workload import (
    DynamicMatmul,
    MatmulLayer,
    TransformerDims,
    VectorWork,
    Workload,
    transformer_workload,
)
from cimc.errors import CimcError

SMALL = Target("small", 1, (1, 1), 4, 32, 32)  # 8 B/cycle DRAM at 800 MHz, 1024 write bits


def test_terms_of_one_layer_cold_and_warm() -> None:
    work = Workload((MatmulLayer("w", 64, 64, 10),))
    cold = lower_bound(work, SMALL)
    # 4 tiles x (10 vectors x 8 + 4) MVM cycles + 4096 B x 8 / 1024 write cycles, 4 macros
    assert cold.compute_cycles == (4 * 84 + 32) // 4
    assert cold.load_cycles == 4096 // 8
    # the layer cannot finish before its bytes arrive and one vector ran over the last
    assert cold.critical_path_cycles == 512 + 12
    assert (cold.cycles, cold.binding) == (524, "critical-path")
    warm = lower_bound(work, SMALL, warm=True)  # fits: stays resident, nothing to load
    assert (warm.bytes_to_load, warm.load_cycles, warm.compute_cycles) == (0, 0, 84)
    assert warm.cycles == 84


def test_flash_source_is_slower() -> None:
    work = Workload((MatmulLayer("w", 64, 64, 10),))
    assert lower_bound(work, SMALL, "flash").load_cycles == -(-4096 * 800 // 6000)


@pytest.mark.parametrize(
    ("fixed_a", "fixed_b", "flexible", "expected"),
    [
        (0.0, 0.0, [(10.0, 10.0)], 5.0),  # split one item evenly
        (10.0, 0.0, [(4.0, 4.0)], 10.0),  # all flexible work goes to the idle side
        (0.0, 0.0, [(2.0, 8.0), (8.0, 2.0)], 2.0),  # each item to its cheap side
        (6.0, 0.0, [(2.0, 8.0), (8.0, 2.0)], 6.8),  # 6 + 2f = 8(1 - f) + 2 at f = 0.4
    ],
)
def test_split_bound_is_the_fractional_optimum(
    fixed_a: float, fixed_b: float, flexible: list[tuple[float, float]], expected: float
) -> None:
    assert _split_bound(fixed_a, 1, fixed_b, 1, flexible) == pytest.approx(expected, rel=1e-6)


def test_dynamic_matmul_takes_the_cheaper_unit() -> None:
    # 1 vector x [64 x 64]: 4096 MACs / (8 lanes) = 512 on vectors; on macros 4 tiles,
    # each an 84-cycle MVM, plus 4096 written bytes
    dyn = DynamicMatmul("qk", 64, 64, 1)
    target = Target("t", 1, (1, 1), 4, 32, 32, vector_lanes=8)
    on_macros = (4 * target.mvm_cycles(1) + 4096 * 8 / 1024) / 4
    assert min_duration(dyn, target) == min(512, -(-on_macros // 1))
    vec = VectorWork("softmax", 100, 3)
    assert min_duration(vec, target) == -(-300 // 8)


def test_bert_base_default_is_load_bound_and_large_is_not() -> None:
    work = transformer_workload(TransformerDims(12, 768, 12, 3072, 128))
    default = lower_bound(work, load_target("default"))
    assert default.binding == "load"
    assert default.load_cycles == work.weight_bytes // 8  # 6.4 GB/s at 800 MHz
    large = lower_bound(work, load_target("large"), warm=True)
    assert large.bytes_to_load == 0 and large.binding != "load"
    for name in ("default", "large"):
        target = load_target(name)
        bound = lower_bound(work, target, warm=True)
        cold = lower_bound(work, target)
        for plan in compare_policies(work, target):
            assert bound.cycles <= plan.makespan_estimate
            assert cold.cycles <= plan.first_makespan_estimate


@settings(max_examples=40, deadline=None)
@given(
    work=workloads(max_layers=4, max_dim=100),
    target=targets(max_macros=6),
    policy=st.sampled_from(POLICIES),
)
def test_no_streaming_plan_beats_the_warm_bound(
    work: Workload, target: Target, policy: str
) -> None:
    try:
        plan = plan_streaming(work, target, policy)  # type: ignore[arg-type]
    except CimcError:
        return  # a single-macro machine cannot double-buffer (tested in test_streaming)
    warm, cold = lower_bound(work, target, warm=True), lower_bound(work, target)
    assert warm.cycles <= plan.makespan_estimate
    assert cold.cycles <= plan.first_makespan_estimate
    assert cold.cycles >= warm.cycles


@settings(max_examples=30, deadline=None)
@given(work=workloads(max_layers=3), target=targets(), extra=st.integers(1, 5000))
def test_more_work_never_lowers_the_bound(work: Workload, target: Target, extra: int) -> None:
    last = work.items[-1].name
    more = Workload((*work.items, VectorWork("tail", extra, 2, depends_on=(last,))))
    assert lower_bound(more, target).cycles >= lower_bound(work, target).cycles
    assert (
        lower_bound(more, target).critical_path_cycles
        > lower_bound(work, target).critical_path_cycles
    )
