"""Time estimates of streaming phases: per-phase compute and the load/compute timeline.

Why so simple: these estimates only rank policies and report how much load time hides
behind compute; the scheduler (later) measures the real makespan with the cost model.
Within a phase a layer takes as long as its busiest macro, a macro as long as all its
windows, and work runs along dependency chains; moving the phase's inputs and partial
sums overlaps that compute, so the phase takes the longer of the two. Phases run one
after another.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from cimc.backend.plan.bounds import min_duration
from cimc.backend.plan.mapping import Placement, vector_share
from cimc.backend.plan.target import Target
from cimc.backend.plan.traffic import movement
from cimc.backend.plan.workload import MatmulLayer, Workload

Step = tuple[int, int, int]  # (bank, compute cycles, transfer cycles); bank -1 = resident


def timeline(steps: Sequence[Step], latency: int, sequential: bool, cold: bool) -> tuple[int, int]:
    """(end time, load time) of one inference: one DMA stream, one phase computing at a time.

    A phase's load may start once the previous load is done and its bank is free (the
    last phase that used the bank finished computing); sequential waits for all compute.
    The image is in load order, so a load that starts the moment the previous one ends
    continues the same contiguous read and pays no new latency; a restart pays it.
    `cold`: the first inference, which also loads the resident phases (image first).
    """
    load_end = compute_end = load_total = 0
    flowing = False
    bank_free: dict[int, int] = {}
    for bank, compute, transfer in steps:
        if bank == -1 and not cold:  # resident: loaded by an earlier inference
            compute_end += compute
            continue
        ready = compute_end if sequential else bank_free.get(bank, 0)
        start = max(load_end, ready)
        duration = transfer + (0 if flowing and start == load_end else latency)
        load_end, load_total, flowing = start + duration, load_total + duration, True
        compute_end = max(compute_end, load_end) + compute
        bank_free[bank] = compute_end
    return compute_end, load_total


def phase_computes(
    workload: Workload, target: Target, placements: Sequence[Placement]
) -> list[int]:
    """Per phase: max(busiest macro, longest dependency chain, activation traffic)."""
    macro_busy: list[dict[tuple[int, int], int]] = [{} for _ in placements]
    layer_time: list[dict[str, int]] = [{} for _ in placements]
    last_phase: dict[str, int] = {}
    for index, placement in enumerate(placements):
        own: dict[tuple[str, int, int], int] = {}  # a layer's own cycles per macro
        for pm in placement.macros:
            for window in pm.image.windows:
                layer = window.tile.layer
                item = workload.item(layer)
                assert isinstance(item, MatmulLayer)
                share = vector_share(item.vectors, placement.copies_of(layer), pm.copy)
                cycles = target.mvm_cycles(share)
                slot = (pm.core, pm.macro)
                macro_busy[index][slot] = macro_busy[index].get(slot, 0) + cycles
                key = (layer, *slot)
                own[key] = own.get(key, 0) + cycles
                layer_time[index][layer] = max(layer_time[index].get(layer, 0), own[key])
                last_phase[layer] = index
    chains = _chains(workload, target, layer_time, last_phase)
    traffic = [traffic_cycles(placement, workload, target) for placement in placements]
    return [
        max(max(busy.values(), default=0), chain, moving)
        for busy, chain, moving in zip(macro_busy, chains, traffic, strict=True)
    ]


def traffic_cycles(placement: Placement, workload: Workload, target: Target) -> int:
    """Cycles to move a phase's activations: every input row leaves the global buffer
    (one chip-wide port), and each core's inputs and received partial sums enter it
    through its one NoC port."""
    moved = movement(placement, workload, target)
    from_gb = moved.input_bytes * 8 / target.gb_bits_per_cycle
    into_core = max(moved.core_ingress, default=0) * 8 / target.noc_bits_per_cycle
    return math.ceil(max(from_gb, into_core))


def _chains(
    workload: Workload,
    target: Target,
    layer_time: Sequence[dict[str, int]],
    last_phase: dict[str, int],
) -> list[int]:
    """Longest dependency chain inside each phase; other work joins its latest phase."""
    finish: list[dict[str, int]] = [{} for _ in layer_time]
    phase = 0
    for item in workload.items:
        homes = [i for i, times in enumerate(layer_time) if item.name in times]
        if not isinstance(item, MatmulLayer):
            homes = [phase]
        for home in homes:
            start = max((finish[home].get(d, 0) for d in item.depends_on), default=0)
            duration = layer_time[home].get(item.name) or min_duration(item, target)
            finish[home][item.name] = start + duration
        phase = last_phase.get(item.name, phase)
    return [max(f.values(), default=0) for f in finish]
