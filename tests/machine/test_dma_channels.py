"""The DMA engine's channels and the fences in the schedule (isa/SPEC.md section 8): a
core hands a dma to its engine and goes on; a fence ignores reads of constants."""

from __future__ import annotations

import dataclasses

from cimc.machine.arch import Arch, load_arch
from cimc.machine.parser import parse_program
from cimc.machine.schedule import simulate

TWO_LOADS_THEN_VECTOR = """.arch default
.input   x       dram[0x0]       i8[64x128]

.core 0
  dma      sp[0x0]:i8[64x128], dram[x]:i8[64x128]
  dma      sp[0x2000]:i8[64x128], dram[x]:i8[64x128]
  fill     sp[0x8000]:i32[8x64], 3
  add      sp[0x8000]:i32[8x64], sp[0x8000]:i32[8x64], 1
  halt
"""


def _with_channels(n: int) -> Arch:
    arch = load_arch("default")
    return dataclasses.replace(arch, core=dataclasses.replace(arch.core, dma_channels=n))


def _sched(text: str, arch: Arch) -> dict[tuple[int, int], object]:
    return {(i.core, i.pc): i for i in simulate(parse_program(text, "d.cimasm"), arch).items}


def test_dma_followed_by_independent_vector_work_overlaps() -> None:
    """The second dma waits for the DRAM channel; the vector work behind it does not."""
    s = _sched(TWO_LOADS_THEN_VECTOR, _with_channels(8))
    first, second, fill, add = (s[(0, k)] for k in range(4))
    assert second.start > first.start + 1  # held back by the shared DRAM channel
    assert fill.start == 2 and add.start == fill.end  # issued on, in order, RAW on its bytes
    assert add.end < second.start  # the vector work is done before the dma even starts


def test_blocking_issue_with_zero_channels() -> None:
    """dma_channels = 0: one channel, the core waits until each dma starts (the old model)."""
    s = _sched(TWO_LOADS_THEN_VECTOR, _with_channels(0))
    first, second, fill = s[(0, 0)], s[(0, 1)], s[(0, 2)]
    assert second.start >= first.end  # one engine: one transfer at a time
    assert fill.start == second.start + 1


def test_channels_bound_the_transfers_in_flight() -> None:
    """With 2 channels the third dma issues only when one of the first two has finished."""
    text = TWO_LOADS_THEN_VECTOR.replace(
        "  fill", "  dma      sp[0x4000]:i8[64x128], dram[x]:i8[64x128]\n  fill", 1
    )
    s = _sched(text, _with_channels(2))
    a, b, c, fill = (s[(0, k)] for k in range(4))
    assert c.start >= min(a.end, b.end)
    assert fill.start == min(a.end, b.end) + 1  # the core waited to hand the third one on
    s = _sched(text, _with_channels(8))
    assert s[(0, 3)].start == 3  # enough channels: no wait


FENCE = """.arch default
.const   w       dram[0x0]       i8[64x128]
.region  buf     dram[0x2000]    8192

.core 0
  {access}
  send     1, sp[0x8000]:i8[1x8], 0
  halt
.core 1
  recv     0, sp[0x0]:i8[1x8], 0
  halt
"""


def test_send_fence_ignores_constant_reads_only() -> None:
    """A weight load in flight does not hold a send (nothing writes a constant); a write to
    a shared region does."""
    arch = load_arch("default")
    const_read = "dma      sp[0x0]:i8[64x128], dram[w]:i8[64x128]"
    s = _sched(FENCE.format(access=const_read), arch)
    assert s[(0, 1)].start < s[(0, 0)].end
    region_write = "dma      dram[buf]:i8[64x128], sp[0x0]:i8[64x128]"
    s = _sched(FENCE.format(access=region_write), arch)
    assert s[(0, 1)].start >= s[(0, 0)].end


def test_barrier_fence_ignores_constant_reads() -> None:
    text = """.arch default
.const   w       dram[0x0]       i8[64x128]

.core 0
  dma      sp[0x0]:i8[64x128], dram[w]:i8[64x128]
  barrier
  halt
.core 1
  barrier
  halt
"""
    s = _sched(text, load_arch("default"))
    assert s[(0, 1)].end < s[(0, 0)].end  # released while the constant load is in flight


def test_channel_takes_the_earliest_gap_that_fits() -> None:
    """Transfers placed out of time order (a DMA in flight lets later work go first) still
    never overlap on a chip-wide channel, and fill the gaps left before a later booking."""
    from cimc.machine.schedule import _Channel

    ch = _Channel()
    ch.book(100, 200)
    assert ch.earliest(0, 50) == 0  # fits before
    assert ch.earliest(0, 150) == 200  # does not: after
    assert ch.earliest(60, 50) == 200
    ch.book(0, 50)
    ch.book(200, 260)  # touching intervals merge
    assert (ch.starts, ch.ends) == ([0, 100], [50, 260])
    assert ch.earliest(40, 50) == 50 and ch.earliest(40, 51) == 260
    ch.prune(60)
    assert ch.starts == [100]


def test_summary_bound_counts_the_engine_channels() -> None:
    """Transfers in flight together: the DMA engine's busy cycles exceed the makespan, so
    the program's lower bound divides them by the channels (and stays below the makespan)."""
    from cimc.machine.summary import summarize

    text = """.arch default
.region  buf     gb[0x0]         65536

.core 0
  dma      sp[0x0]:i8[64x128], gb[buf]:i8[64x128]
  dma      sp[0x2000]:i8[64x128], gb[buf+0x2000]:i8[64x128]
  dma      sp[0x4000]:i8[64x128], gb[buf+0x4000]:i8[64x128]
  halt
"""
    program = parse_program(text, "b.cimasm")
    arch = load_arch("default")
    summary = summarize(program, arch)
    dma = next(u for u in summary.units if u.name == "core0.dma")
    assert dma.busy_cycles > summary.makespan_cycles  # the three overlap
    assert summary.lower_bound_cycles <= summary.makespan_cycles
    assert dma.utilization <= 1.0


def _loads(core: int, count: int, rows: int, at: int) -> str:
    lines = [f".core {core}"]
    for k in range(count):
        view = f"i8[{rows}x128]"
        lines.append(f"  dma      sp[{hex(at + k * rows * 128)}]:{view}, dram[x]:{view}")
    return "\n".join([*lines, "  halt"])


def _channel_order(text: str) -> list[tuple[int, int]]:
    items = simulate(parse_program(text, "c.cimasm"), load_arch("default")).items
    dram = [i for i in items if "dram" in i.cost.channels]
    return [(i.core, i.pc) for i in sorted(dram, key=lambda i: i.start + i.cost.lead)]


def test_a_far_core_does_not_starve_a_near_one() -> None:
    """Core 3 is further from memory than core 0 (a longer lead): its transfers start
    earlier to reach the DRAM channel at the same cycle. They are served in the order they
    reach the channel, the one waiting longer first, so the two cores take turns; ordering
    by start would give core 3 every turn until it ran out of loads."""
    header = ".arch default\n.input   x       dram[0x0]       i8[64x128]\n\n"
    order = _channel_order(header + _loads(0, 4, 64, 0) + "\n" + _loads(3, 4, 64, 0))
    first_six = [core for core, _ in order[:6]]
    assert first_six.count(0) == 3 and first_six.count(3) == 3, order


def test_a_short_load_goes_before_a_long_one_due_at_the_same_cycle() -> None:
    """Shortest first at equal times: an input row asked for while a weight piece waits
    for the same channel does not queue behind it."""
    text = (
        ".arch default\n.input   x       dram[0x0]       i8[64x128]\n\n"
        + _loads(0, 2, 64, 0)
        + "\n"
        + _loads(1, 1, 1, 0)
    )
    order = _channel_order(text)
    assert order == [(0, 0), (1, 0), (0, 1)], order
