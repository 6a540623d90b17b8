"""The phase timeline: hand-computed overlap, latency only on restarts, cold vs steady."""

from __future__ import annotations

from cimc.backend.plan.timing import timeline


def test_sequential_adds_latency_load_and_compute_per_phase() -> None:
    steps = [(0, 50, 100), (0, 50, 100)]
    assert timeline(steps, latency=10, sequential=True, cold=False) == (2 * (10 + 100 + 50), 220)


def test_double_buffer_streams_back_to_back_and_overlaps_compute() -> None:
    # load0 0-110, compute0 110-160; load1 110-210 (same stream, no new latency),
    # compute1 210-260; load2 into bank0 (free at 160) 210-310, compute2 310-360
    steps = [(0, 50, 100), (1, 50, 100), (0, 50, 100)]
    assert timeline(steps, latency=10, sequential=False, cold=False) == (360, 310)


def test_a_stalled_stream_pays_latency_again() -> None:
    # compute0 is long: bank0's next load waits for it, and restarts the read
    steps = [(0, 500, 100), (1, 10, 100), (0, 10, 100)]
    end, load = timeline(steps, latency=10, sequential=False, cold=False)
    # load0 0-110, c0 110-610; load1 110-210, c1 610-620; load2 waits for bank0 (610)
    assert (end, load) == (610 + 110 + 10, 110 + 100 + 110)


def test_resident_phases_load_only_when_cold() -> None:
    # steady: resident compute 0-40 while bank0 loads 0-110, then compute 110-160
    steps = [(-1, 40, 100), (0, 50, 100)]
    assert timeline(steps, latency=10, sequential=False, cold=False) == (160, 110)
    assert timeline(steps, latency=10, sequential=False, cold=True) == (110 + 100 + 50, 210)
