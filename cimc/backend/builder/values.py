"""Storage of graph values in shared memory: one row-major 2-D region per value.

Every value of shape (d0, ..., dn) lives as a contiguous [d0*...*d(n-1) x dn] region
(a scalar as 1x1; bool as i8 0/1), which is the layout every lowering takes
(cimc/backend/lower/common.py). Placement is planned before any instruction is emitted:

- graph inputs are `.input` declarations (a float input quantized on the host by
  `q.quantize` becomes the `.input` of its codes, under the graph input's name);
- integer constants and `q.constant` codes are `.const` declarations;
- a value that is a graph output is written straight into its `.output` declaration;
- a `reshape` is a free re-view of its operand's region (values are contiguous);
- every other value gets a slot in an activation pool, in gb while the pool fits
  `GB_SHARE` of the global buffer, else in a dram pool; slots are reused once every
  consumer of the value (and of its re-views) has run (first fit over live ranges), and
  only `REUSE_LAG` nodes later when the pool still fits gb that way and the weights do
  not stream (`_weights_fit`): a slot rewritten by the very next nodes is a
  write-after-read against the cores still reading it, which costs a synchronisation of
  all cores (a barrier) for no data.
- in a pipeline (`stages` given, cimc/backend/plan/pipeline.py) micro-batch k+1 of an
  early stage runs while micro-batch k is in a later one, so a slot shared by values of
  two stages would order the stages (the later write waits for the earlier read) and
  serialize the pipe. A value touched by one stage only reuses slots of that stage's own
  pool; a value passed between stages keeps a slot of its own for the whole run, every
  micro-batch writing its own rows. A value of one stage that carries the batch lives only
  while its stage works on one micro-batch, so its slot holds `MICRO_BUFFERS` buffers of
  one micro-batch's rows, micro-batch k using buffer k % MICRO_BUFFERS (`per_micro`; the
  stage's cores run the micro-batches in order; two buffers let micro-batch k+1's writes
  go ahead while micro-batch k's last reads finish). Without that, a stage's pool held
  the whole batch of each of its values.

Why a plan first: declarations need their addresses before the first instruction, and the
pools are declared once with their high-water size, so the rest of gb stays free.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from cimc.backend.builder.alloc import Allocator, align_up
from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.plan.micro_batch import MicroBatches
from cimc.errors import CimcError
from cimc.ir.graph import Graph, Node
from cimc.ir.ops import Constant, Input, Reshape
from cimc.ir.types import DType
from cimc.machine.arch import Arch
from cimc.machine.program import DTYPE_BYTES, Space, View
from cimc.machine.program import DType as MDType
from cimc.quant.dialect import QConstant, QLinear, QQuantize

GB_SHARE = 3 / 4  # of the global buffer for activations; the rest stays for lowerings
REUSE_LAG = 4  # nodes a freed slot waits before reuse (when gb has the room)
SLOT_ALIGN = 64
MICRO_BUFFERS = 2  # per_micro slots: micro-batch k uses buffer k % 2 (see the module doc)
POOL_NAMES: dict[Space, str] = {"gb": "act.gb", "dram": "act.dram"}

MACHINE_DTYPE: dict[DType, MDType] = {
    DType.I8: "i8",
    DType.I16: "i16",
    DType.I32: "i32",
    DType.I64: "i64",
    DType.BOOL: "i8",
}


def machine_dtype(node: Node) -> MDType:
    dt = MACHINE_DTYPE.get(node.type.dtype)
    if dt is None:
        raise CimcError(
            f"value of type {node.type} cannot live on the machine (quantize the graph first)",
            node.where,
        )
    return dt


def rows_cols(shape: tuple[int, ...]) -> tuple[int, int]:
    """The 2-D form [prod(shape[:-1]) x shape[-1]] of a value (a scalar is 1x1)."""
    if not shape:
        return 1, 1
    return math.prod(shape[:-1]), shape[-1]


def decl_name(text: str) -> str:
    """A declaration name the assembly grammar accepts, derived from a value name."""
    name = re.sub(r"[^A-Za-z0-9_.]", "_", text)
    return name if re.match(r"[A-Za-z_]", name) else f"v_{name}"


@dataclass(frozen=True)
class Storage:
    """Where a value lives: a declaration (kind input/output/const) or a pool slot."""

    kind: str  # "input", "output", "const", "pool", "alias", "host"
    space: Space = "dram"
    offset: int = 0  # byte offset inside the pool
    root: str = ""  # for aliases: the value whose region this re-views
    per_micro: bool = False  # a pipeline's pool slot of one micro-batch's rows (see above)


@dataclass
class ValuePlan:
    """The placement of every value of a graph, and the pool sizes it needs."""

    slots: dict[str, Storage]
    pool_bytes: dict[Space, int]
    last_use: dict[str, int]  # root value -> index of the last node that reads it
    host_inputs: dict[str, str] = field(default_factory=dict)  # q.quantize node -> graph input


def _root(slots: dict[str, Storage], name: str) -> str:
    slot = slots.get(name)
    return slot.root if slot is not None and slot.kind == "alias" else name


def _kind(graph: Graph, node: Node, outputs: set[str]) -> Storage | None:
    if isinstance(node.op, Input):
        users = graph.users(node.name)
        if node.type.dtype.is_float:
            if users and all(isinstance(graph.node(u).op, QQuantize) for u in users):
                return Storage("host")
            raise CimcError("float graph inputs must be quantized (q.quantize)", node.where)
        return Storage("input")
    if isinstance(node.op, QQuantize):
        return Storage("input")
    if isinstance(node.op, Constant | QConstant):
        return Storage("const")
    if isinstance(node.op, Reshape):
        return None  # decided by the caller: an alias of the operand's region
    return Storage("output") if node.name in outputs else None


def plan_values(
    graph: Graph,
    arch: Arch,
    lag: int | None = None,
    stages: Mapping[str, int] | None = None,
    micro: MicroBatches | None = None,
) -> ValuePlan:
    """Place every value (see the module docstring); deterministic in the graph order.
    `lag` (default: REUSE_LAG when the weights stay resident, 0 when they stream or when
    waiting would push a value out of gb) is the number of nodes a freed slot waits
    before it is reused; `stages`: the pipeline stage of every code-emitting node, and
    `micro` its micro-batches."""
    if stages is not None:
        if micro is None:
            raise CimcError("a pipeline's values need its micro-batches", "plan-values")
        if lag is not None:
            return _plan_staged(graph, arch, stages, micro, lag)
        staged = _plan_staged(graph, arch, stages, micro, REUSE_LAG)  # as below: gb first
        if "dram" not in staged.pool_bytes:
            return staged
        return _plan_staged(graph, arch, stages, micro, 0)
    if lag is None:
        lagged = plan_values(graph, arch, REUSE_LAG) if _weights_fit(graph, arch) else None
        if lagged is not None and "dram" not in lagged.pool_bytes:
            return lagged
        lag = 0
    nodes = graph.nodes()
    slots, host, last_use = _kinds(graph)
    gb_cap = int(arch.memory.gb_bytes * GB_SHARE)
    pools: dict[Space, Allocator] = {
        "gb": Allocator("activation pool in gb", gb_cap, "memory.gb_bytes", align=SLOT_ALIGN),
        "dram": Allocator(
            "activation pool in dram", arch.memory.dram_bytes, "memory.dram_bytes", align=SLOT_ALIGN
        ),
    }
    frees: dict[int, list[str]] = {}
    for i, node in enumerate(nodes):
        if slots[node.name].kind == "pool":
            slots[node.name] = _place(pools, node)
            frees.setdefault(last_use.get(node.name, i) + lag, []).append(node.name)
        for name in frees.pop(i, []):
            slot = slots[name]
            pools[slot.space].free(slot.offset)
    sizes: dict[Space, int] = {s: align_up(p.high_water, SLOT_ALIGN) for s, p in pools.items()}
    return ValuePlan(slots, {s: n for s, n in sizes.items() if n}, last_use, host)


def _kinds(graph: Graph) -> tuple[dict[str, Storage], dict[str, str], dict[str, int]]:
    """Each value's storage kind ("pool" still unplaced), the host-quantized inputs and
    each root region's last reader."""
    nodes = graph.nodes()
    index = {n.name: i for i, n in enumerate(nodes)}
    outputs = {name for _, name in graph.outputs}
    slots: dict[str, Storage] = {}
    host: dict[str, str] = {}
    for node in nodes:
        slot = _kind(graph, node, outputs)
        if isinstance(node.op, Reshape):
            slot = Storage("alias", root=_root(slots, node.inputs[0]))
        if isinstance(node.op, QQuantize):
            host[node.name] = node.inputs[0]
        slots[node.name] = slot or Storage("pool")
    return slots, host, _last_uses(graph, nodes, index, slots, outputs)


def _plan_staged(
    graph: Graph, arch: Arch, stages: Mapping[str, int], micro: MicroBatches, lag: int
) -> ValuePlan:
    """Pools per stage plus one of values passed between stages (see the module doc),
    laid out one after another: in gb while they fit GB_SHARE of it, then in dram. The
    stages' pools come first: their values are written and read by several nodes each,
    the passed ones once each way, and a stage whose pool is in dram (a DRAM channel of a
    tenth of gb's bandwidth on `large`) becomes the pipe's slowest."""
    slots, host, last_use = _kinds(graph)
    touched: dict[str, set[int]] = {}
    for node in graph.nodes():
        if node.name in stages:
            for name in (node.name, *node.inputs):
                touched.setdefault(_root(slots, name), set()).add(stages[node.name])
    pools: dict[int, Allocator] = {}
    pool_of: dict[str, int] = {}
    frees: dict[int, list[tuple[int, int]]] = {}
    for i, node in enumerate(graph.nodes()):
        if slots[node.name].kind == "pool":
            own = touched.get(node.name, set())
            key = next(iter(own)) if len(own) == 1 else -1  # -1: between stages, kept
            pool = pools.setdefault(key, Allocator(
                f"activation pool of stage {key}", arch.memory.dram_bytes, "memory.dram_bytes",
                align=SLOT_ALIGN))  # fmt: skip
            per_micro = key >= 0 and micro.carries(node.name)
            shaped = micro.micro.node(node.name) if per_micro else node
            slot = _place_in(pool, shaped, MICRO_BUFFERS if per_micro else 1)
            slots[node.name] = Storage("pool", "gb", slot, per_micro=per_micro)
            pool_of[node.name] = key
            if key >= 0:
                frees.setdefault(last_use.get(node.name, i) + lag, []).append((key, slot))
        for key, offset in frees.pop(i, []):
            pools[key].free(offset)
    base: dict[Space, int] = {"gb": 0, "dram": 0}
    where: dict[int, tuple[Space, int]] = {}
    for key in sorted(pools, key=lambda k: (k < 0, k)):  # stages' own pools first: see doc
        size = align_up(pools[key].high_water, SLOT_ALIGN)
        space: Space = "gb" if base["gb"] + size <= int(arch.memory.gb_bytes * GB_SHARE) else "dram"
        where[key] = (space, base[space])
        base[space] += size
    if base["dram"] > arch.memory.dram_bytes:
        raise CimcError(
            f"the pipeline's activation pools need {base['dram']} bytes of dram; raise "
            "arch field 'memory.dram_bytes' or use --mapping spread",
            "plan-values",
        )
    for name, key in pool_of.items():
        space, start = where[key]
        slots[name] = replace(slots[name], space=space, offset=start + slots[name].offset)
    return ValuePlan(slots, {s: n for s, n in base.items() if n}, last_use, host)


def _place_in(pool: Allocator, node: Node, copies: int = 1) -> int:
    r, c = rows_cols(node.type.shape)
    return pool.alloc(r * c * DTYPE_BYTES[machine_dtype(node)] * copies)


def _weights_fit(graph: Graph, arch: Arch) -> bool:
    """Do the static matmul tiles fit the macros at once (no weight streaming)? With
    streamed weights the lag made BERT-base on `default` slower (benchmarks/FINDINGS.md,
    "Reuse lag only with resident weights"), so it is kept to resident weights, where it
    removes synchronisation (see the module doc)."""
    rows, cols = arch.macro.rows, arch.macro.cols
    tiles = 0
    for node in graph.nodes():
        if isinstance(node.op, QLinear):
            k, n = node.op.plan.weight.shape
            tiles += -(-k // rows) * -(-n // cols)
    return tiles <= arch.chip.cores * arch.core.macros


def _last_uses(
    graph: Graph,
    nodes: list[Node],
    index: dict[str, int],
    slots: dict[str, Storage],
    outs: set[str],
) -> dict[str, int]:
    """Index of the last reader of each root region (the end for graph outputs)."""
    end = len(nodes)
    last: dict[str, int] = {}
    for node in nodes:
        root = _root(slots, node.name)
        uses = [index[u] for u in graph.users(node.name)]
        if node.name in outs:
            uses.append(end)
        last[root] = max([last.get(root, index[node.name]), *uses])
    return last


def _place(pools: dict[Space, Allocator], node: Node) -> Storage:
    r, c = rows_cols(node.type.shape)
    nbytes = r * c * DTYPE_BYTES[machine_dtype(node)]
    try:
        return Storage("pool", "gb", pools["gb"].alloc(nbytes))
    except CimcError:
        return Storage("pool", "dram", pools["dram"].alloc(nbytes))


class ValueStore:
    """The views of every value once the plan's declarations exist in a builder."""

    def __init__(
        self, graph: Graph, plan: ValuePlan, b: ProgramBuilder, micro: Graph | None = None
    ) -> None:
        self.graph = graph
        self.plan = plan
        self.b = b
        self.micro = micro  # a pipeline's graph at the micro-batch size (per_micro values)
        self.views: dict[str, View] = {}
        self.output_decls: dict[str, str] = {}  # graph output name -> declaration name
        self._pools: dict[Space, View] = {}
        for space, nbytes in sorted(plan.pool_bytes.items()):
            self._pools[space] = b.region(POOL_NAMES[space], "i8", 1, nbytes, space)

    def view(self, name: str) -> View:
        """The [rows x cols] view of value `name` (declared on first use); of a per_micro
        value, the one micro-batch's rows its slot holds."""
        if name not in self.views:
            self.views[name] = self._make(self.graph.node(name))
        return self.views[name]

    def per_micro(self, name: str) -> bool:
        """Does the value's slot hold one micro-batch's rows (see the module doc)?"""
        return self.plan.slots[_root(self.plan.slots, name)].per_micro

    def _make(self, node: Node) -> View:
        slot = self.plan.slots[node.name]
        shaped = self.micro.node(node.name) if self.per_micro(node.name) and self.micro else node
        r, c = rows_cols(shaped.type.shape)
        dt = machine_dtype(node)
        if slot.kind == "alias":
            base = self.view(slot.root)
            return View(base.space, base.addr, dt, r, c, symbol=base.symbol, offset=base.offset)
        if slot.kind == "pool":
            pool = self._pools[slot.space]
            return View(
                slot.space,
                pool.addr + slot.offset,
                dt,
                r,
                c,
                symbol=pool.symbol,
                offset=slot.offset,
            )
        if slot.kind == "input":
            source = self.plan.host_inputs.get(node.name, node.name)
            return self.b.input(decl_name(source), dt, r, c)
        if slot.kind == "output":
            outs = [o for o, v in self.graph.outputs if v == node.name]
            name = decl_name(outs[0])
            self.output_decls[outs[0]] = name
            return self.b.output(name, dt, r, c)
        if slot.kind == "const":
            assert isinstance(node.op, Constant | QConstant)  # the only "const" values
            value = node.op.value
            return self.b.const(decl_name(node.name), value.astype("int64").reshape(r, c), dt)
        raise CimcError(f"value of kind {slot.kind} has no storage", node.where)
