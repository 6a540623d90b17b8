"""Text and summary forms of the streaming plan (`--print-ir-after map` prints it).

One deterministic line per macro window answers the question users ask first: which
weight tile lives in which macro, loaded from where in the image, in which phase.
"""

from __future__ import annotations

from typing import Any

from cimc.backend.plan.bounds import lower_bound
from cimc.backend.plan.streaming import Phase, StreamPlan
from cimc.backend.plan.target import Target
from cimc.backend.plan.traffic import movement
from cimc.backend.plan.workload import Workload

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


def plan_summary(plan: StreamPlan, workload: Workload, target: Target) -> dict[str, Any]:
    """Figures for `cimc compile/verify --json` (keys named as the backend issue asks).

    `lower_bound_cycles` is the first inference's (cold), as `verify` runs one inference;
    the steady-state pair (weights that fit stay resident) is reported beside it.
    """
    cold = lower_bound(workload, target, plan.source)
    warm = lower_bound(workload, target, plan.source, warm=True)
    moved = [movement(p.placement, workload, target) for p in plan.phases]
    return {
        "policy": plan.policy,
        "phases": len(plan.phases),
        "macro_utilization": round(plan.utilization, 6),
        "weight_bytes": plan.weight_bytes,
        "weight_bytes_loaded": plan.bytes_first_inference,
        "weight_bytes_loaded_per_inference": plan.bytes_per_inference,
        "smallest_streamed_phase_bytes": min((p.nbytes for p in plan.streamed), default=0),
        "flash_chunk_bytes": target.flash_chunk_bytes,
        "load_cycles": plan.load_cycles,
        "hidden_load_cycles": plan.hidden_load_cycles,
        "makespan_estimate_cycles": plan.first_makespan_estimate,
        "lower_bound_cycles": cold.cycles,
        "lower_bound_binding": cold.binding,
        "steady_makespan_estimate_cycles": plan.makespan_estimate,
        "steady_lower_bound_cycles": warm.cycles,
        "input_bytes_to_cores": sum(m.input_bytes for m in moved),
        "partial_sum_bytes": sum(m.partial_bytes for m in moved),
        "partial_sum_hop_bytes": sum(m.partial_hop_bytes for m in moved),
        "duplicated_layers": [
            [name, copies] for p in plan.phases for name, copies in p.placement.duplicated
        ],
        "copy_bytes": plan.copy_bytes,  # read again from the image by the duplicates
    }
