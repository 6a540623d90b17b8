"""What a program will place in DRAM besides its weight image, known before lowering.

The memory planner (cimc/backend/plan/memory.py) must size the weight tiles kept in DRAM
before a single declaration exists, so it takes the rest from the graph and the value
plan: the DRAM activation pool, graph inputs, outputs and constants, every array of every
op's plan (biases, multipliers, tables: the lowerings declare them as constants, in a
width no wider than the plan's), what ops declaring shared storage name (KV caches), and
one declaration alignment each. Gathered tables (embeddings) are listed apart: they may
move to flash. The estimate errs high; the builder's DRAM allocator is the exact check.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass

import numpy as np

from cimc.backend.builder.alloc import fit_dtype
from cimc.backend.builder.asm import DECL_ALIGN
from cimc.backend.builder.values import ValuePlan, machine_dtype, rows_cols
from cimc.ir.graph import Graph, Node
from cimc.machine.program import DTYPE_BYTES
from cimc.quant.dialect import QEmbedding, QLinear, QMaskedLinear, SharedStorage


@dataclass(frozen=True)
class DramNeed:
    other: int  # bytes of everything but the weight image and the gathered tables
    tables: dict[str, int]  # q.embedding node -> bytes of its table


def dram_need(graph: Graph, values: ValuePlan) -> DramNeed:
    """The DRAM a program of `graph` needs besides its weight image (see the module doc)."""
    total = values.pool_bytes.get("dram", 0)
    shared: dict[str, int] = {}
    tables: dict[str, int] = {}
    for node in graph.nodes():
        slot = values.slots[node.name]
        if slot.kind in ("input", "output", "const"):
            total += _value_bytes(node) + DECL_ALIGN
        if isinstance(node.op, QEmbedding):
            r, c = node.op.plan.table.shape
            tables[node.name] = r * c * DTYPE_BYTES[machine_dtype(node)]
            continue
        if isinstance(node.op, SharedStorage):
            inputs = tuple(graph.node(i).type for i in node.inputs)
            shared.update(node.op.shared_storage(node.name, inputs))
        total += _plan_bytes(node)
    total += sum(shared.values()) + DECL_ALIGN * len(shared)
    return DramNeed(total, tables)


def _value_bytes(node: Node) -> int:
    r, c = rows_cols(node.type.shape)
    return r * c * DTYPE_BYTES[machine_dtype(node)]


def _plan_bytes(node: Node) -> int:
    """Bytes of the arrays of the op's plan, the static weight excepted (it is tiled into
    the weight image), each with a declaration's alignment."""
    plan = getattr(node.op, "plan", None)
    skip = "weight" if isinstance(node.op, QLinear) else None
    return _arrays_bytes(plan, skip) + _neuron_numbers(node)


def _neuron_numbers(node: Node) -> int:
    """A masked linear's `NAME.neurons` constant (0..N-1 as i16 or i32,
    cimc/backend/lower/predicted_linear.py)."""
    if not isinstance(node.op, QMaskedLinear):
        return 0
    n = node.op.plan.weight.shape[1]
    return n * (2 if n - 1 <= 32767 else 4) + DECL_ALIGN


def _arrays_bytes(record: object, skip: str | None = None) -> int:
    """Bytes of every array in a plan record and the records nested in it: an int64 array
    in the narrowest type holding its values (multipliers and shifts are declared so),
    a narrower array in its own type (a bias stays int32)."""
    if record is None or not is_dataclass(record):
        return 0
    total = 0
    for f in fields(record):
        if f.name == skip:
            continue
        value = getattr(record, f.name)
        if isinstance(value, np.ndarray) and value.dtype == np.int64:
            total += value.size * DTYPE_BYTES[fit_dtype(value)] + DECL_ALIGN
        elif isinstance(value, np.ndarray):
            total += value.nbytes + DECL_ALIGN
        else:
            total += _arrays_bytes(value)
    return total
