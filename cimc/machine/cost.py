"""Per-instruction cost: functional unit, latency in cycles, energy breakdown, channel use.

One cost function per opcode, registered in the opcode table (`register_cost`), with the
signature `cost(instr, core, arch) -> InstrCost`. The formulas (isa/SPEC.md, "Cost model"):

- dma / gather / scatter: dma_setup + source/destination latency + hops + ceil(bytes /
  slowest port), where the ports are the DRAM or flash channel, the global-buffer port and
  the NoC link of the core (only when the transfer crosses the NoC). Flash reads shorter
  than one chunk take a chunk's time. The shared channels (dram, flash, gb) are held during
  the data phase.
- send: ceil(bits / NoC link) + hops; mcast: the same with the farthest destination's hops
  (routers copy the packet where the XY routes part); recv: 1 cycle after the matching
  send's data arrived.
- mload: ceil(bits / min(write bandwidth, source port)); mvm: n * input_bits / bits_per_cycle
  + pipeline cycles.
- vector op: ceil(elements / lanes) * op cycles (vector_div_cycles for div, isqrt) + pipeline.

Energy (pJ): MACs * mac_fj, written weight bits, bytes read and written per memory level,
NoC bits x hops (an mcast: x the links of its XY tree), vector element operations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from cimc.machine.arch import Arch
from cimc.machine.dynamic import chunks_touched, named_rows, valid_count
from cimc.machine.opcodes import COSTS, DYNAMIC, register_cost, spec_of
from cimc.machine.program import CoreSet, Imm, Instr, MacroRef, View

ENERGY_KINDS = (
    "mac",
    "weight_write",
    "scratchpad",
    "global_buffer",
    "noc",
    "dram",
    "flash",
    "vector",
)
_SPACE_ENERGY = {"sp": "scratchpad", "gb": "global_buffer", "dram": "dram", "flash": "flash"}
_LONG_VECTOR_OPS = frozenset({"div", "isqrt"})


@dataclass(frozen=True)
class Energy:
    """Energy breakdown in pJ."""

    mac: float = 0.0
    weight_write: float = 0.0
    scratchpad: float = 0.0
    global_buffer: float = 0.0
    noc: float = 0.0
    dram: float = 0.0
    flash: float = 0.0
    vector: float = 0.0

    def __add__(self, other: Energy) -> Energy:
        return Energy(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def total(self) -> float:
        return sum(getattr(self, f.name) for f in fields(self))

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class InstrCost:
    """Cost of one instruction on one core.

    `unit` names the core's unit (`dma`, `noc`, `vector`, `macro3`, `sync`). `channels` are
    the chip-wide resources the data phase (`data_cycles`, starting `lead` cycles after the
    start) uses; channel i is held for `channel_cycles[i]` of it (its bytes over its own
    bandwidth: a wide global-buffer port serves several narrower NoC links at once), or for
    the whole data phase when `channel_cycles` is empty.
    `moved` lists (source space, destination space, bytes) for traffic statistics.
    """

    unit: str
    cycles: int
    energy: Energy
    channels: tuple[str, ...] = ()
    lead: int = 0
    data_cycles: int = 0
    moved: tuple[tuple[str, str, int], ...] = ()
    macs: int = 0
    channel_cycles: tuple[int, ...] = ()

    def held(self, i: int) -> int:
        """Cycles chip-wide channel `channels[i]` is held, from the start of the data phase."""
        return self.channel_cycles[i] if self.channel_cycles else self.data_cycles


def instr_cost(instr: Instr, core: int, arch: Arch, index: np.ndarray | None = None) -> InstrCost:
    """The cost of `instr` executed by `core` (dispatch through the opcode table); a
    data-dependent instruction (gather.m, mload.m, mload.t.m) is priced for the rows `index` (the
    column a run read, cimc/machine/dynamic.py) names, or all of them when None."""
    if instr.opcode in DYNAMIC:
        return COSTS[instr.opcode](instr, core, arch, index)  # type: ignore[no-any-return]
    return COSTS[instr.opcode](instr, core, arch)  # type: ignore[no-any-return]


def _access(space: str, nbytes: int, arch: Arch) -> dict[str, float]:
    """Energy of reading or writing `nbytes` of `space`."""
    e = arch.energy
    per_byte = {
        "sp": e.sp_pj_per_byte,
        "gb": e.gb_pj_per_byte,
        "dram": e.dram_pj_per_byte,
        "flash": e.flash_pj_per_byte,
    }[space]
    return {_SPACE_ENERGY[space]: nbytes * per_byte}


def _energy(*parts: dict[str, float]) -> Energy:
    total: dict[str, float] = {}
    for part in parts:
        for key, value in part.items():
            total[key] = total.get(key, 0.0) + value
    return Energy(**total)


# --- data movement -------------------------------------------------------------------------


def _port(space: str, nbytes: int, arch: Arch) -> tuple[float, int, int, str | None]:
    """(bytes per cycle, latency, bytes the port is charged for, channel name) of a space."""
    m = arch.memory
    if space == "dram":
        return arch.dram_bytes_per_cycle, m.dram_latency_cycles, nbytes, "dram"
    if space == "flash":
        return (
            arch.flash_bytes_per_cycle,
            m.flash_latency_cycles,
            max(nbytes, m.flash_chunk_bytes),
            "flash",
        )
    if space == "gb":
        return m.gb_bits_per_cycle / 8, m.gb_latency_cycles, nbytes, "gb"
    return math.inf, 0, nbytes, None


def transfer(
    src: str, dst: str, nbytes: int, core: int, arch: Arch, src_charged: int | None = None
) -> InstrCost:
    """A DMA of `nbytes` from space `src` to space `dst` issued by `core`; `src_charged`
    replaces the bytes the source port is charged for (a gather's flash chunks)."""
    ports = [_port(src, nbytes, arch), _port(dst, nbytes, arch)]
    if src_charged is not None:
        bw, latency, _, channel = ports[0]
        ports[0] = (bw, latency, src_charged, channel)
    crosses_noc = (src == "sp") != (dst == "sp")
    hops = arch.memory_hops(core) if crosses_noc else 0
    link = arch.chip.noc_bits_per_cycle / 8
    # Each port needs ceil(charged bytes / bandwidth); the slowest one sets the data phase.
    phases = [math.ceil(charged / bw) for bw, _, charged, _ in ports if bw != math.inf]
    if crosses_noc or not phases:  # sp<->sp copies go through the DMA datapath (link width)
        phases.append(math.ceil(nbytes / link))
    data = max(phases)
    lead = arch.core.dma_setup_cycles + sum(p[1] for p in ports) + hops * arch.chip.noc_hop_cycles
    channels = tuple(sorted({p[3] for p in ports if p[3] is not None}))
    held = tuple(  # a port used twice (gb -> gb) moves both sides; never past the data phase
        min(data, sum(math.ceil(charged / bw) for bw, _, charged, name in ports if name == c))
        for c in channels
    )
    noc = {"noc": nbytes * 8 * hops * arch.energy.noc_pj_per_bit_hop}
    energy = _energy(_access(src, nbytes, arch), _access(dst, nbytes, arch), noc)
    moved = ((src, dst, nbytes),)
    return InstrCost("dma", lead + data, energy, channels, lead, data, moved, 0, held)


def _view(instr: Instr, i: int) -> View:
    op = instr.operands[i]
    assert isinstance(op, View)
    return op


@register_cost("dma")
def _dma_cost(instr: Instr, core: int, arch: Arch) -> InstrCost:
    dst, src = _view(instr, 0), _view(instr, 1)
    return transfer(src.space, dst.space, src.nbytes, core, arch)


@register_cost("gather")
def _gather_cost(instr: Instr, core: int, arch: Arch) -> InstrCost:
    dst, table, index = _view(instr, 0), _view(instr, 1), _view(instr, 2)
    base = transfer(table.space, dst.space, dst.nbytes, core, arch)
    return _row_bursts(base, dst.rows, table, index, arch)


@register_cost("scatter")
def _scatter_cost(instr: Instr, core: int, arch: Arch) -> InstrCost:
    table, src, index = _view(instr, 0), _view(instr, 1), _view(instr, 2)
    base = transfer(src.space, table.space, src.nbytes, core, arch)
    return _row_bursts(base, src.rows, table, index, arch)


@register_cost("gather.m")
def _gather_masked_cost(
    instr: Instr, core: int, arch: Arch, index: np.ndarray | None = None
) -> InstrCost:
    """Only the named rows move, read back to back (one descriptor list, so the table's
    latency is paid once); from flash each chunk holding a named byte is read once.
    Naming no row costs the DMA setup alone."""
    dst, table, idx = _view(instr, 0), _view(instr, 1), _view(instr, 2)
    return _named_rows_cost(dst, table, idx, named_rows(index, dst.rows), index is None, core, arch)


@register_cost("dma.m")
def _dma_masked_cost(
    instr: Instr, core: int, arch: Arch, index: np.ndarray | None = None
) -> InstrCost:
    """As gather.m: only the named rows move, in place; without a record every entry of
    the index counts as a row (at most the table's)."""
    dst, src, idx = _view(instr, 0), _view(instr, 1), _view(instr, 2)
    if index is None:
        rows = np.arange(min(idx.rows, src.rows), dtype=np.int64)
    else:
        rows = np.unique(named_rows(index, idx.rows))  # a repeated row moves once
    return _named_rows_cost(dst, src, idx, rows, index is None, core, arch)


def _named_rows_cost(
    dst: View, table: View, idx: View, rows: np.ndarray, static: bool, core: int, arch: Arch
) -> InstrCost:
    """`rows` of `table` moved to `dst`'s space by one descriptor list (see gather.m)."""
    nbytes = int(rows.size) * table.cols * table.elem_bytes
    index_read = _energy(_access("sp", idx.nbytes, arch))
    if nbytes == 0:
        return InstrCost("dma", arch.core.dma_setup_cycles, index_read)
    charged = None
    if table.space == "flash":
        chunk = arch.memory.flash_chunk_bytes
        charged = chunk * (
            _flash_chunks_at_most(table, int(rows.size), chunk)
            if static
            else chunks_touched(table, rows, chunk)
        )
    base = transfer(table.space, dst.space, nbytes, core, arch, charged)
    return InstrCost(
        "dma",
        base.cycles,
        base.energy + index_read,
        base.channels,
        base.lead,
        base.data_cycles,
        base.moved,
        channel_cycles=base.channel_cycles,
    )


def _flash_chunks_at_most(table: View, rows: int, chunk: int) -> int:
    """Chunks `rows` rows of `table` touch at most (no run recorded): each row its own
    chunks, but never more than the table spans."""
    per_row = -(-table.cols * table.elem_bytes // chunk) + 1
    spanned = (table.end - 1) // chunk - table.addr // chunk + 1
    return min(rows * per_row, spanned)


def _row_bursts(base: InstrCost, rows: int, table: View, index: View, arch: Arch) -> InstrCost:
    """An indexed transfer (gather, scatter): one burst per row, so each row pays the
    table's latency again (rows are independent), plus reading the index."""
    extra_latency = (rows - 1) * _port(table.space, 0, arch)[1]
    energy = base.energy + _energy(_access("sp", index.nbytes, arch))
    return InstrCost(
        "dma",
        base.cycles + extra_latency,
        energy,
        base.channels,
        base.lead,
        base.data_cycles + extra_latency,
        base.moved,
        channel_cycles=tuple(base.held(i) + extra_latency for i in range(len(base.channels))),
    )


def _noc_bits(view: View) -> int:
    return view.nbytes * 8


@register_cost("send")
def _send_cost(instr: Instr, core: int, arch: Arch) -> InstrCost:
    peer, src = instr.operands[0], _view(instr, 1)
    assert isinstance(peer, Imm)
    hops = arch.hops(core, peer.value) if 0 <= peer.value < arch.chip.cores else 0
    cycles = (
        math.ceil(_noc_bits(src) / arch.chip.noc_bits_per_cycle) + hops * arch.chip.noc_hop_cycles
    )
    energy = _energy(
        _access("sp", src.nbytes, arch),
        {"noc": _noc_bits(src) * hops * arch.energy.noc_pj_per_bit_hop},
    )
    return InstrCost("noc", max(cycles, 1), energy, moved=(("sp", "sp", src.nbytes),))


@register_cost("mcast")
def _mcast_cost(instr: Instr, core: int, arch: Arch) -> InstrCost:
    peers, src = instr.operands[0], _view(instr, 1)
    assert isinstance(peers, CoreSet)
    dests = tuple(c for c in peers.cores if c < arch.chip.cores)
    hops = max((arch.hops(core, d) for d in dests), default=0)
    links = arch.tree_links(core, dests) if dests else 0
    cycles = (
        math.ceil(_noc_bits(src) / arch.chip.noc_bits_per_cycle) + hops * arch.chip.noc_hop_cycles
    )
    energy = _energy(
        _access("sp", src.nbytes, arch),
        {"noc": _noc_bits(src) * links * arch.energy.noc_pj_per_bit_hop},
    )
    moved = (("sp", "sp", src.nbytes * len(peers.cores)),)
    return InstrCost("noc", max(cycles, 1), energy, moved=moved)


@register_cost("recv")
def _recv_cost(instr: Instr, core: int, arch: Arch) -> InstrCost:
    dst = _view(instr, 1)
    return InstrCost("noc", 1, _energy(_access("sp", dst.nbytes, arch)))


@register_cost("barrier", "halt")
def _sync_cost(instr: Instr, core: int, arch: Arch) -> InstrCost:
    return InstrCost("sync", 0, Energy())


# --- macro ---------------------------------------------------------------------------------


def _macro_unit(instr: Instr) -> tuple[str, MacroRef]:
    found = spec_of(instr).macro(instr)
    assert found is not None
    return f"macro{found[0].index}", found[0]


@register_cost("mload", "mload.t")
def _mload_cost(instr: Instr, core: int, arch: Arch) -> InstrCost:
    return _macro_write(instr, core, arch, _view(instr, 1).nbytes)


@register_cost("mload.m", "mload.t.m")
def _mload_masked_cost(
    instr: Instr, core: int, arch: Arch, index: np.ndarray | None = None
) -> InstrCost:
    """Only the named source rows are read and written (window rows of mload.m, window
    columns of mload.t.m); the skipped ones cost nothing."""
    src, idx = _view(instr, 1), _view(instr, 2)
    nbytes = valid_count(index, src.rows) * src.cols
    cost = _macro_write(instr, core, arch, nbytes)
    energy = cost.energy + _energy(_access("sp", idx.nbytes, arch))
    return InstrCost(
        cost.unit,
        cost.cycles,
        energy,
        cost.channels,
        cost.lead,
        cost.data_cycles,
        cost.moved,
        channel_cycles=cost.channel_cycles,
    )


def _macro_write(instr: Instr, core: int, arch: Arch, nbytes: int) -> InstrCost:
    """Writing `nbytes` of the source view into the instruction's macro window."""
    unit, _ = _macro_unit(instr)
    src = _view(instr, 1)
    bits = nbytes * 8
    bandwidth = arch.macro.write_bits_per_cycle
    lead, noc = 0, 0.0
    channels: tuple[str, ...] = ()
    held: tuple[int, ...] = ()
    if src.space == "gb":  # streamed over the NoC from the shared buffer
        hops = arch.memory_hops(core)
        bandwidth = min(bandwidth, arch.memory.gb_bits_per_cycle, arch.chip.noc_bits_per_cycle)
        lead = arch.memory.gb_latency_cycles + hops * arch.chip.noc_hop_cycles
        channels = ("gb",)
        held = (math.ceil(bits / arch.memory.gb_bits_per_cycle),)  # the port's share
        noc = bits * hops * arch.energy.noc_pj_per_bit_hop
    data = math.ceil(bits / bandwidth)
    energy = _energy(
        _access(src.space, nbytes, arch),
        {"weight_write": bits * arch.energy.weight_write_pj_per_bit, "noc": noc},
    )
    moved = ((src.space, "macro", nbytes),)
    data_phase = data if channels else 0
    return InstrCost(unit, lead + data, energy, channels, lead, data_phase, moved, 0, held)


@register_cost("mvm", "mvm.acc", "mvm.i4", "mvm.i4.acc")
def _mvm_cost(instr: Instr, core: int, arch: Arch) -> InstrCost:
    unit, _ = _macro_unit(instr)
    dst, src = _view(instr, 0), _view(instr, 1)
    macs = src.rows * src.cols * dst.cols
    cycles = src.rows * arch.mvm_cycles_per_vector + arch.macro.pipeline_cycles
    sp_bytes = src.nbytes + dst.nbytes * (2 if instr.opcode.endswith(".acc") else 1)
    energy = _energy({"mac": macs * arch.energy.mac_fj / 1000.0}, _access("sp", sp_bytes, arch))
    return InstrCost(unit, cycles, energy, macs=macs)


# --- vector unit ---------------------------------------------------------------------------

_VECTOR_OPS = (
    "add", "sub", "mul", "max", "min", "shl", "rshr", "div", "req", "isqrt", "lut",
    "rsum", "rmax", "sel", "mov", "transpose", "fill", "nzidx",
)  # fmt: skip


@register_cost(*_VECTOR_OPS)
def _vector_cost(instr: Instr, core: int, arch: Arch) -> InstrCost:
    spec = spec_of(instr)
    reads, writes = spec.reads(instr), spec.writes(instr)
    # Work is over the larger of the main input and the output (rsum reads R x C and writes
    # R x 1); lut's table and broadcast operands are not per-element work.
    elements = max(v.elements for v in (*reads[:1], *writes))
    per_group = arch.core.vector_div_cycles if instr.opcode in _LONG_VECTOR_OPS else 1
    groups = math.ceil(elements / arch.core.vector_lanes)
    cycles = groups * per_group + arch.core.vector_pipeline_cycles
    sp_bytes = sum(v.nbytes for v in (*reads, *writes))
    energy = _energy(
        {"vector": elements * arch.energy.vector_pj_per_op}, _access("sp", sp_bytes, arch)
    )
    return InstrCost("vector", cycles, energy)
