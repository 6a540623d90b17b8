"""The Perfetto trace is well formed: slices of a track nest, every recv has its flow arrow,
counters are step functions that match the schedule."""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from cimc.machine.arch import Arch, load_arch
from cimc.machine.parser import load_program, parse_program
from cimc.machine.schedule import Schedule, simulate
from cimc.machine.trace import chrome_trace
from cimc.resources import isa_dir

Event = dict[str, object]


def improperly_nested(events: list[Event]) -> int:
    """Slices of one (pid, tid) that partly overlap an open slice (Perfetto's rule: on a
    track, a slice either starts after the previous ended or lies inside it)."""
    tracks: dict[tuple[object, object], list[tuple[Decimal, Decimal]]] = defaultdict(list)
    for e in events:
        if e["ph"] == "X":  # exact decimal arithmetic on the numbers as written
            start, dur = Decimal(str(e["ts"])), Decimal(str(e["dur"]))
            tracks[(e["pid"], e["tid"])].append((start, start + dur))
    bad = 0
    for slices in tracks.values():
        open_ends: list[Decimal] = []
        for start, end in sorted(slices, key=lambda s: (s[0], -s[1])):
            while open_ends and open_ends[-1] <= start:
                open_ends.pop()
            if open_ends and end > open_ends[-1]:
                bad += 1
                continue
            open_ends.append(end)
    return bad


def trace_of(program_path: Path | str, arch: Arch) -> tuple[Schedule, list[Event]]:
    program = load_program(program_path)
    schedule = simulate(program, arch)
    trace = json.loads(json.dumps(chrome_trace(schedule, arch, "t")))
    return schedule, trace["traceEvents"]


def test_the_nesting_check_can_fail() -> None:
    slices: list[Event] = [
        {"ph": "X", "pid": 0, "tid": 1, "ts": 0.0, "dur": 10.0},
        {"ph": "X", "pid": 0, "tid": 1, "ts": 2.0, "dur": 3.0},  # nested: fine
        {"ph": "X", "pid": 0, "tid": 1, "ts": 8.0, "dur": 5.0},  # crosses the first's end
    ]
    assert improperly_nested(slices) == 1


OVERLAPPING_DMAS = """\
.arch default
.input x dram[0x0] i8[64x64]
.core 0
  dma sp[0x0]:i8[64x64], dram[x]:i8[64x64]
  dma sp[0x1000]:i8[64x64], dram[x]:i8[64x64]
  dma sp[0x2000]:i8[64x64], dram[x]:i8[64x64]
  halt
"""


def test_concurrent_dmas_get_as_many_tracks_as_overlap() -> None:
    arch = load_arch("default")
    schedule = simulate(parse_program(OVERLAPPING_DMAS, "d.cimasm"), arch)
    spans = [(i.start, i.end) for i in schedule.items if i.instr.opcode == "dma"]
    overlap = max(sum(a <= t < b for a, b in spans) for t, _ in spans)
    assert overlap == 2  # the dram channel serialises data phases, the setups overlap
    events = json.loads(json.dumps(chrome_trace(schedule, arch)))["traceEvents"]
    dmas = [e for e in events if e["ph"] == "X" and e["name"] == "dma"]
    assert len({e["tid"] for e in dmas}) == overlap
    assert improperly_nested(events) == 0
    single_track = [{**e, "tid": 0} for e in dmas]  # what one DMA track used to give
    assert improperly_nested(single_track) > 0
    names = {e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert {"DMA channel 0", "DMA channel 1"} <= names
    in_flight = [e["args"]["value"] for e in events if e["name"] == "DMA transfers in flight"]
    assert max(in_flight) == overlap and in_flight[-1] == 0


@pytest.mark.parametrize("name", ["matmul_2core", "double_buffer", "layernorm"])
def test_examples_nest_and_every_recv_has_a_flow(name: str) -> None:
    path = isa_dir() / "examples" / f"{name}.cimasm"
    program = load_program(path)
    arch = load_arch(program.arch_name)
    schedule, events = trace_of(path, arch)
    assert improperly_nested(events) == 0
    recvs = [i for i in schedule.items if i.instr.opcode == "recv"]
    starts = {e["id"]: e for e in events if e["ph"] == "s"}
    ends = {e["id"]: e for e in events if e["ph"] == "f"}
    assert len(starts) == len(ends) == len(recvs)
    for flow, end in ends.items():
        assert starts[flow]["ts"] <= end["ts"] and starts[flow]["pid"] != end["pid"]


def test_bandwidth_counters_carry_the_bytes_moved() -> None:
    path = isa_dir() / "examples" / "double_buffer.cimasm"
    arch = load_arch(load_program(path).arch_name)
    schedule, events = trace_of(path, arch)
    points = sorted(
        (float(e["ts"]), float(e["args"]["value"]))  # type: ignore[index]
        for e in events
        if e["name"] == "dram bandwidth (GB/s)"
    )
    assert points and points[-1][1] == 0.0
    integral = sum(
        rate * (t1 - t0) for (t0, rate), (t1, _) in zip(points, points[1:], strict=False)
    )
    moved = sum(
        n
        for item in schedule.items
        if "dram" in item.cost.channels
        for src, dst, n in item.cost.moved
        if "dram" in (src, dst)
    )
    assert integral * 1e3 == pytest.approx(moved, rel=1e-2)  # GB/s x us = 1e3 bytes (ns rounding)


def test_gpt2_trace_has_no_improperly_nested_slice(tmp_path: Path) -> None:
    """The issue's case: GPT-2 (HF, random weights) on the default preset, 8 DMA channels."""
    import cimc
    from cimc.zoo import build_model, example_inputs

    module = build_model("gpt2", "tiny", head="lm")
    ids, mask = example_inputs(module, seq_len=8)
    model = cimc.compile(module, example_inputs=(ids, mask), arch="default")
    path = model.save(tmp_path / "gpt2.cimasm")
    schedule, events = trace_of(path, model.arch)
    assert improperly_nested(events) == 0
    dma_tracks = {(e["pid"], e["tid"]) for e in events if e["ph"] == "X" and e["name"] == "dma"}
    per_core = defaultdict(int)
    for core, _ in dma_tracks:
        per_core[core] += 1
    assert max(per_core.values()) > 1  # transfers overlap, so the old single track did not nest
    assert all(n <= model.arch.core.dma_channels for n in per_core.values())
    sends = sum(1 for i in schedule.items if i.instr.opcode == "recv")
    assert sum(1 for e in events if e["ph"] == "f") == sends > 0
