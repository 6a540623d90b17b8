"""Text and summary forms of a streaming plan (what `--print-ir-after map` would show).

One deterministic line per macro window answers the question users ask first: which
weight tile lives in which macro, loaded from where in the image, in which phase.
"""

from __future__ import annotations

from typing import Any

from cimc.backend.bounds import LowerBound
from cimc.backend.streaming import Phase, StreamPlan

BANK_NAMES = {-1: "resident", 0: "bank0", 1: "bank1"}


def format_plan(plan: StreamPlan) -> str:
    """The plan as text: a header of figures, then phases with their macro windows."""
    lines = [
        f"; stream plan policy={plan.policy} source={plan.source}",
        f"; weight_bytes={plan.weight_bytes} first_inference_bytes={plan.bytes_first_inference}"
        f" per_inference_bytes={plan.bytes_per_inference}",
        f"; load_cycles={plan.load_cycles} hidden_load_cycles={plan.hidden_load_cycles}"
        f" makespan_estimate={plan.makespan_estimate} first={plan.first_makespan_estimate}"
        f" utilization={plan.utilization:.4f}"
        f" split_columns={plan.split_columns}",
    ]
    for phase in plan.phases:
        lines.extend(_format_phase(phase))
    return "\n".join(lines) + "\n"


def _format_phase(phase: Phase) -> list[str]:
    end = phase.offset + phase.nbytes
    lines = [
        f"phase {phase.index} {BANK_NAMES[phase.bank]} image[0x{phase.offset:x}:0x{end:x}]"
        f" macros={len(phase.placement.macros)} compute_cycles={phase.compute_cycles}"
    ]
    for pm in phase.placement.macros:
        for w in pm.image.windows:
            copy = f" copy{pm.copy}" if pm.copy else ""
            place = f"c{pm.core}.m{pm.macro}[{w.r0}:{w.r1},{w.c0}:{w.c1}]"
            lines.append(f"  {place:<24} {w.tile.label}{copy}")
    return lines


def plan_summary(plan: StreamPlan, cold: LowerBound, warm: LowerBound) -> dict[str, Any]:
    """Figures for `cimc compile/verify --json` (keys named as the backend issue asks).

    `lower_bound_cycles` is the first inference's (cold), as `verify` runs one inference;
    the steady-state pair is reported beside it.
    """
    return {
        "policy": plan.policy,
        "phases": len(plan.phases),
        "macro_utilization": round(plan.utilization, 6),
        "weight_bytes": plan.weight_bytes,
        "weight_bytes_loaded": plan.bytes_first_inference,
        "weight_bytes_loaded_per_inference": plan.bytes_per_inference,
        "load_cycles": plan.load_cycles,
        "hidden_load_cycles": plan.hidden_load_cycles,
        "makespan_estimate_cycles": plan.first_makespan_estimate,
        "lower_bound_cycles": cold.cycles,
        "lower_bound_binding": cold.binding,
        "steady_makespan_estimate_cycles": plan.makespan_estimate,
        "steady_lower_bound_cycles": warm.cycles,
        "duplicated_layers": [
            [name, copies] for p in plan.phases for name, copies in p.placement.duplicated
        ],
    }
