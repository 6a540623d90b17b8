"""Cost model: per-instruction formulas computed by hand from the arch, and schedule overlap."""

from __future__ import annotations

import json
import math

import pytest

from cimc.errors import CimcError
from cimc.machine.arch import load_arch
from cimc.machine.cost import instr_cost
from cimc.machine.opcodes import OPCODES, missing_implementations
from cimc.machine.parser import parse_program
from cimc.machine.schedule import simulate, total_energy
from cimc.machine.summary import summarize
from cimc.machine.trace import chrome_trace

DEFAULT = load_arch("default")


def instr(line: str, arch: str = "default"):
    program = parse_program(f".arch {arch}\n\n.core 0\n  {line}\n  halt\n", "c.cimasm")
    return program.cores[0].instrs[0]


def test_every_opcode_has_kernel_and_cost() -> None:
    import cimc.machine.interpreter  # noqa: F401
    import cimc.machine.schedule  # noqa: F401

    assert missing_implementations() == {"kernel": (), "cost": ()}
    assert len(OPCODES) >= 27


def test_mvm_cost_by_hand() -> None:
    c = instr_cost(instr("mvm sp[0x0]:i32[10x128], sp[0x8000]:i8[10x128], m3"), 0, DEFAULT)
    # 10 vectors x 8 bit-serial cycles + 4 pipeline cycles
    assert (c.unit, c.cycles, c.macs) == ("macro3", 10 * 8 + 4, 10 * 128 * 128)
    assert c.energy.mac == pytest.approx(10 * 128 * 128 * 100e-3)  # 100 fJ per MAC
    assert c.energy.scratchpad == pytest.approx((1280 + 5120) * 0.5)
    acc = instr_cost(instr("mvm.acc sp[0x0]:i32[10x128], sp[0x8000]:i8[10x128], m3"), 0, DEFAULT)
    assert acc.energy.scratchpad == pytest.approx((1280 + 2 * 5120) * 0.5)


def test_dma_cost_by_hand() -> None:
    c = instr_cost(instr("dma sp[0x0]:i8[64x128], dram[0x0]:i8[64x128]"), 3, DEFAULT)
    nbytes = 64 * 128
    # setup 16 + DRAM latency 100 + 3 hops (core 3 at (1,1), port beside (0,0)) x 1 cycle,
    # then 8192 bytes at min(8 B/cycle DRAM, 32 B/cycle link)
    assert c.lead == 16 + 100 + 3
    assert c.data_cycles == nbytes // 8
    assert c.cycles == c.lead + c.data_cycles and c.channels == ("dram",)
    assert c.energy.dram == pytest.approx(nbytes * 60)
    assert c.energy.scratchpad == pytest.approx(nbytes * 0.5)
    assert c.energy.noc == pytest.approx(nbytes * 8 * 3 * 0.1)


def test_flash_chunk_and_gb_cost() -> None:
    small = instr_cost(instr("dma gb[0x0]:i8[1x1024], flash[0x0]:i8[1x1024]"), 0, DEFAULT)
    # a read shorter than the 32 KiB chunk takes a chunk's time at 6 GB/s / 800 MHz
    assert small.data_cycles == math.ceil(32768 / 7.5)
    assert small.lead == 16 + 20000 + 4 and small.channels == ("flash", "gb")
    assert small.energy.flash == pytest.approx(1024 * 250)
    gb = instr_cost(instr("mload m0, gb[0x0]:i8[128x128]"), 1, DEFAULT)
    # 131072 bits at min(1024 write, 1024 gb, 256 NoC) bits/cycle, after gb latency + 2 hops
    assert (gb.lead, gb.data_cycles, gb.channels) == (4 + 2, 512, ("gb",))
    assert gb.energy.weight_write == pytest.approx(131072 * 0.012)
    # the 1024-bit gb port is held for its own share, 128 cycles of the 512-cycle stream
    assert gb.held(0) == 131072 // 1024
    # flash -> gb: the flash channel for the chunk's time, the gb port for 1024 B / 128 B/cycle
    assert small.held(0) == small.data_cycles and small.held(1) == 1024 // 128


def test_gb_port_share_of_a_link_rate_dma() -> None:
    c = instr_cost(instr("dma sp[0x0]:i8[64x128], gb[0x0]:i8[64x128]"), 0, DEFAULT)
    # data phase at the 32 B/cycle NoC link; the 128 B/cycle gb port is busy a quarter of it
    assert c.data_cycles == 8192 // 32 and c.held(0) == 8192 // 128
    twice = instr_cost(instr("dma gb[0x4000]:i8[64x128], gb[0x0]:i8[64x128]"), 0, DEFAULT)
    # gb -> gb moves both sides through the one port: never held past the data phase
    assert twice.held(0) == min(twice.data_cycles, 2 * 8192 // 128)


def test_vector_cost_by_hand() -> None:
    add = instr_cost(instr("add sp[0x0]:i32[7x96], sp[0x1000]:i32[7x96], 3"), 0, DEFAULT)
    assert add.cycles == math.ceil(7 * 96 / 64) + 2
    assert add.energy.vector == pytest.approx(7 * 96 * 0.2)
    div = instr_cost(instr("div sp[0x0]:i32[7x96], sp[0x1000]:i32[7x96], 3"), 0, DEFAULT)
    assert div.cycles == math.ceil(7 * 96 / 64) * 8 + 2
    rsum = instr_cost(instr("rsum sp[0x0]:i64[7x1], sp[0x1000]:i32[7x96]"), 0, DEFAULT)
    assert rsum.cycles == add.cycles  # work is over the 7x96 input


OVERLAP = """.arch default
.input   x       dram[0x0]       i8[64x128]
.input   y       dram[0x8000]    i8[64x128]

.core 0
  dma      sp[0x0]:i8[64x128], dram[x]:i8[64x128]
  mload    m0, sp[0x0]:i8[64x128]
  mvm      sp[0x10000]:i32[64x64], sp[0x0]:i8[64x64], m0
  dma      sp[{addr}]:i8[64x128], dram[y]:i8[64x128]
  halt
"""


def _sched(text: str, arch: str = "default"):
    program = parse_program(text, "s.cimasm")
    return {(i.core, i.pc): i for i in simulate(program, load_arch(arch)).items}


def test_independent_dma_overlaps_mvm() -> None:
    s = _sched(OVERLAP.format(addr="0x4000"))  # a different buffer
    mvm, dma = s[(0, 2)], s[(0, 3)]
    assert dma.start == mvm.start + 1  # issued right behind the MVM
    assert dma.start < mvm.end


def test_dependent_dma_waits_for_mvm() -> None:
    s = _sched(OVERLAP.format(addr="0x0"))  # overwrites the MVM's input (WAR)
    mvm, dma = s[(0, 2)], s[(0, 3)]
    assert dma.start == mvm.end
    load = s[(0, 1)]
    assert load.start == s[(0, 0)].end  # RAW: mload waits for the DMA that fills its source
    assert mvm.start == load.end  # same macro unit


TWO_LOADS = """.arch default
{decl}

.core 0
  dma      sp[0x0]:i8[64x128], {space}[x]:i8[64x128]
  halt
.core 1
  dma      sp[0x0]:i8[64x128], {space}[x]:i8[64x128]
  halt
"""


def _two_loads(decl: str, space: str):
    """Both cores load the same 8 KiB block from `space`: (first, second) by start."""
    s = _sched(TWO_LOADS.format(decl=decl, space=space))
    return sorted((s[(0, 0)], s[(1, 0)]), key=lambda i: i.start)


def test_dram_channel_is_shared() -> None:
    first, second = _two_loads(".input   x       dram[0x0]       i8[64x128]", "dram")
    # the second transfer's data phase starts when the first one's ends
    assert second.start + second.cost.lead == first.start + first.cost.lead + first.cost.data_cycles


def test_gb_port_serves_several_links_at_once() -> None:
    first, second = _two_loads(".region  x       gb[0x0]         8192", "gb")
    # each holds the 128 B/cycle port for 64 of its 256 link-rate cycles: the second waits
    # for the first one's port share, not for its whole transfer
    gap = (second.start + second.cost.lead) - (first.start + first.cost.lead)
    assert gap == first.cost.held(0) == 64 < first.cost.data_cycles


SYNC = """.arch tiny
.core 0
  fill     sp[0x0]:i32[32x32], 1
  send     1, sp[0x0]:i32[32x32], 0
  barrier
  halt
.core 1
  recv     0, sp[0x0]:i32[32x32], 0
  barrier
  fill     sp[0x0]:i32[1x1], 2
  halt
"""


def test_send_recv_and_barrier_timing() -> None:
    s = _sched(SYNC, "tiny")
    fill, send, recv = s[(0, 0)], s[(0, 1)], s[(1, 0)]
    arch = load_arch("tiny")
    assert send.start == fill.end  # RAW on the sent buffer
    assert send.end - send.start == math.ceil(32 * 32 * 32 / 64) + arch.hops(0, 1)
    assert recv.end == send.end + 1
    b0, b1 = s[(0, 2)], s[(1, 1)]
    assert b0.end == b1.end == max(b0.start, b1.start)
    assert s[(1, 2)].start == b1.end


def test_schedule_deadlock_is_error() -> None:
    text = ".arch tiny\n.core 0\n  barrier\n  halt\n.core 1\n  halt\n"
    with pytest.raises(CimcError, match="schedule deadlock: core 0 at line 3"):
        simulate(parse_program(text, "d.cimasm"), load_arch("tiny"))


def test_summary_and_trace() -> None:
    program = parse_program(OVERLAP.format(addr="0x4000"), "s.cimasm")
    schedule = simulate(program, DEFAULT)
    summary = summarize(program, DEFAULT, schedule)
    assert summary.makespan_cycles == schedule.makespan
    assert summary.lower_bound_cycles <= summary.makespan_cycles
    assert summary.dynamic_energy_uj == pytest.approx(total_energy(schedule).total / 1e6)
    assert summary.energy_uj == pytest.approx(summary.dynamic_energy_uj + summary.leakage_energy_uj)
    assert summary.macs == 64 * 64 * 64
    assert summary.opcode_counts == {"dma": 2, "halt": 1, "mload": 1, "mvm": 1}
    assert summary.bytes_moved == {"dram->sp": 16384, "sp->macro": 8192}
    assert summary.macro_cell_utilization == pytest.approx(0.5)  # 64 of 128 rows written
    busy = {u.name: u.busy_cycles for u in summary.units}
    assert busy["core0.macro0"] == schedule.items[1].cost.cycles + 64 * 8 + 4
    trace = json.loads(json.dumps(chrome_trace(schedule, DEFAULT, "s")))
    xs = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["pid"] == 0]
    assert len(xs) == 5
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    assert {"DMA channel 0", "macro 0", "dram channel"} <= names


def test_relaxed_schedule_is_a_lower_bound() -> None:
    for name in ("double_buffer", "matmul_2core", "layernorm", "softmax_rows"):
        from cimc.machine.parser import load_program
        from cimc.resources import isa_dir

        program = load_program(isa_dir() / "examples" / f"{name}.cimasm")
        arch = load_arch(program.arch_name)
        real, relaxed = simulate(program, arch), simulate(program, arch, relaxed=True)
        starts = {(i.core, i.pc): i.start for i in real.items}
        assert all(i.start <= starts[(i.core, i.pc)] for i in relaxed.items)
        assert relaxed.makespan <= real.makespan
        assert summarize(program, arch).lower_bound_cycles >= relaxed.makespan
    # two DMAs on one engine: the relaxed schedule overlaps them, the real one cannot
    text = OVERLAP.format(addr="0x4000")
    program = parse_program(text, "s.cimasm")
    assert simulate(program, DEFAULT, relaxed=True).makespan < simulate(program, DEFAULT).makespan


SEND_FENCE = """.arch tiny
.region  buf     dram[0x0]       4096

.core 0
  {first}
  fill     sp[0x2000]:i8[1x8], 1
  send     1, sp[0x2000]:i8[1x8], 0
  halt
.core 1
  recv     0, sp[0x0]:i8[1x8], 0
  {second}
  halt
"""
_WRITE = "dma      dram[buf]:i8[32x128], sp[0x0]:i8[32x128]"
_READ = "dma      sp[0x1000]:i8[32x128], dram[buf]:i8[32x128]"


@pytest.mark.parametrize(("first", "second"), [(_WRITE, _READ), (_READ, _WRITE), (_WRITE, _WRITE)])
def test_send_waits_for_earlier_shared_accesses(first: str, second: str) -> None:
    """The validator orders core 0's dram access before core 1's (send -> recv); the
    schedule must not start core 1's access while core 0's is still in flight."""
    program = parse_program(SEND_FENCE.format(first=first, second=second), "f.cimasm")
    arch = load_arch("tiny")
    from cimc.machine.validator import validate

    validate(program, arch)  # race-free: the send/recv orders the two dram accesses
    s = {(i.core, i.pc): i for i in simulate(program, arch).items}
    for sched in (s, {(i.core, i.pc): i for i in simulate(program, arch, relaxed=True).items}):
        dma0, send, dma1 = sched[(0, 0)], sched[(0, 2)], sched[(1, 1)]
        assert send.start >= dma0.end
        assert dma1.start >= dma0.end
    assert s[(0, 2)].start == s[(0, 0)].end


def test_send_does_not_wait_for_scratchpad_work() -> None:
    """The fence is for gb/dram only: a long MVM on other sp bytes overlaps the send."""
    text = """.arch tiny
.core 0
  fill     sp[0x0]:i8[32x32], 1
  mload    m0, sp[0x0]:i8[32x32]
  mvm      sp[0x400]:i32[64x32], sp[0x0]:i8[64x32], m0
  send     1, sp[0x3000]:i8[1x8], 0
  halt
.core 1
  recv     0, sp[0x0]:i8[1x8], 0
  halt
"""
    s = _sched(text, "tiny")
    mvm, send = s[(0, 2)], s[(0, 3)]
    assert send.start == mvm.start + 1 and send.start < mvm.end
