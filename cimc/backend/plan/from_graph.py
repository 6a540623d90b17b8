"""Derive the backend's `Workload` from a graph, float (canonical) or quantized (q-dialect).

Why from either: planning only needs shapes, so a user can see tiling, phases and bounds
for an imported model before calibration; the quantized graph gives the same workload
(its q-ops keep the shapes of the ops they replace). Static-weight matmuls (`linear`,
`q.linear`, or a `matmul` whose right operand is a 2-D constant) become `MatmulLayer`s;
`matmul` of two run-time values and each attention's QK^T and PV become
`DynamicMatmul`s; every other computing op becomes `VectorWork`. Ops that only rename
memory (inputs, constants, reshape) produce no work and pass dependencies through.
Item names are the graph node names, so tiles and instructions trace back to nodes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from cimc.backend.plan.workload import DynamicMatmul, MatmulLayer, VectorWork, WorkItem, Workload
from cimc.ir.graph import Graph, Node
from cimc.ir.types import TensorType

FREE_OPS = frozenset({"input", "constant", "q.constant", "reshape"})
LINEAR_OPS = frozenset({"linear", "q.linear"})
MATMUL_OPS = frozenset({"matmul", "q.matmul"})
ATTENTION_OPS = frozenset({"attention", "q.attention"})
# Vector-unit operations per output element of the integer recipes (DESIGN.md).
VECTOR_OPS = {
    "layer_norm": 8,
    "q.layer_norm": 8,
    "rms_norm": 6,
    "q.rms_norm": 6,
    "softmax": 6,
    "q.softmax": 6,
    "rotary": 4,
    "q.rotary": 4,
    "q.add": 3,
    "q.mul": 2,
}
SOFTMAX_OPS_PER_SCORE = 6  # max, subtract, exp table, sum, divide, requantize


def workload_from_graph(graph: Graph) -> Workload:
    """The work of one run of `graph`, in its topological order."""
    items: list[WorkItem] = []
    provides: dict[str, tuple[str, ...]] = {}  # node -> work items its value depends on
    for node in graph.nodes():
        deps = _deps(node, provides)
        if node.op.NAME in FREE_OPS:
            provides[node.name] = deps
            continue
        made = _lower(graph, node, deps)
        items.extend(made)
        provides[node.name] = (made[-1].name,)
    return Workload(tuple(items))


def _deps(node: Node, provides: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for name in node.inputs:
        for item in provides[name]:
            seen[item] = None
    return tuple(seen)


def _lower(graph: Graph, node: Node, deps: tuple[str, ...]) -> list[WorkItem]:
    name, kind = node.name, node.op.NAME
    types = graph.input_types(node)
    if kind in LINEAR_OPS or (kind in MATMUL_OPS and _constant_matrix(graph, node)):
        k, n = _weight_shape(node, types)
        return [MatmulLayer(name, k, n, _rows(types[0]), depends_on=deps)]
    if kind in MATMUL_OPS:
        a, b = types
        count = math.prod(node.type.shape[:-2])
        return [DynamicMatmul(name, a.shape[-1], b.shape[-1], a.shape[-2], count, deps)]
    if kind in ATTENTION_OPS:
        return _attention(name, types, deps)
    return [VectorWork(name, _elements(graph, node), VECTOR_OPS.get(kind, 1), deps)]


def _elements(graph: Graph, node: Node) -> int:
    """Elements touched: the larger of the output and each run-time operand (reductions
    read more than they write; tables and other constants are indexed, not swept)."""
    sizes = [math.prod(node.type.shape)]
    for name in node.inputs:
        operand = graph.node(name)
        if operand.op.NAME not in ("constant", "q.constant"):
            sizes.append(math.prod(operand.type.shape))
    return max(1, *sizes)


def _weight_shape(node: Node, types: Sequence[TensorType]) -> tuple[int, int]:
    plan = getattr(node.op, "plan", None)
    weight = getattr(plan, "weight", None)
    if weight is not None:  # q.linear keeps its int8 weight in the plan
        return int(weight.shape[0]), int(weight.shape[1])
    return types[1].shape[0], types[1].shape[1]


def _constant_matrix(graph: Graph, node: Node) -> bool:
    right = graph.node(node.inputs[1])
    return right.op.NAME == "constant" and right.type.rank == 2


def _rows(x: TensorType) -> int:
    """Input vectors of a matmul: every leading index of x[..., K]."""
    return max(1, math.prod(x.shape[:-1]))


def _attention(name: str, types: Sequence[TensorType], deps: tuple[str, ...]) -> list[WorkItem]:
    """QK^T per query head, the softmax over the scores, then PV (GQA shares k and v)."""
    q, k, v = types[:3]
    batch, heads, queries, head_dim = q.shape
    keys, value_dim = k.shape[2], v.shape[3]
    count = batch * heads
    scores = count * queries * keys
    return [
        DynamicMatmul(f"{name}.qk", head_dim, keys, queries, count, deps),
        VectorWork(f"{name}.softmax", scores, SOFTMAX_OPS_PER_SCORE, (f"{name}.qk",)),
        DynamicMatmul(f"{name}.pv", keys, value_dim, queries, count, (f"{name}.softmax",)),
    ]
