"""The plan's text form names every window; the summary carries the issue's keys."""

from __future__ import annotations

from cimc.backend.plan.bounds import lower_bound
from cimc.backend.plan.report import format_plan, plan_summary
from cimc.backend.plan.streaming import plan_streaming
from cimc.backend.plan.target import Target, load_target
from cimc.backend.plan.workload import MatmulLayer, Workload

WORK = Workload((MatmulLayer("a", 7, 40, 3), MatmulLayer("b", 40, 70, 3, depends_on=("a",))))


def test_text_form_lists_each_window_once_in_order() -> None:
    plan = plan_streaming(WORK, load_target("tiny"), "double-buffer")
    text = format_plan(plan)
    assert text == format_plan(plan_streaming(WORK, load_target("tiny"), "double-buffer"))
    assert "phase 0 resident image[0x0:0xc08] macros=4" in text
    windows = [line.split() for line in text.splitlines() if line.startswith("  c")]
    assert len(windows) == len(plan.image)
    assert ["c0.m1[0:32,0:32]", "b[0:32,0:32]"] in windows


def test_streamed_phases_show_their_image_ranges() -> None:
    target = Target("t", 1, (1, 1), 2, 8, 8)
    plan = plan_streaming(Workload((MatmulLayer("w", 16, 16, 1),)), target, "sequential")
    headers = [line for line in format_plan(plan).splitlines() if line.startswith("phase")]
    assert [h.split()[:4] for h in headers] == [
        ["phase", "0", "bank0", "image[0x0:0x80]"],
        ["phase", "1", "bank0", "image[0x80:0x100]"],
    ]


def test_summary_pairs_cold_and_steady_figures() -> None:
    target = load_target("tiny")
    plan = plan_streaming(WORK, target)
    summary = plan_summary(plan, WORK, target)
    assert summary["weight_bytes_loaded"] == 3080 == summary["weight_bytes"]
    assert summary["weight_bytes_loaded_per_inference"] == 0
    assert summary["lower_bound_cycles"] <= summary["makespan_estimate_cycles"]
    assert summary["steady_lower_bound_cycles"] <= summary["steady_makespan_estimate_cycles"]
    assert 0 < summary["macro_utilization"] <= 1
    assert summary["lower_bound_cycles"] == lower_bound(WORK, target).cycles
    # the units alternate over tiny's two cores: both K-ranges reach both cores, and
    # b's columns 32:64 has its reduction tiles on both (one 3 x 32 int32 partial sum)
    assert summary["input_bytes_to_cores"] == 2 * (3 * 7 + 3 * 40)
    assert summary["partial_sum_bytes"] == 3 * 32 * 4
