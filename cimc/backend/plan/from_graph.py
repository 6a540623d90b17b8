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
from cimc.ir.op_base import Op
from cimc.ir.ops import (
    Attention,
    Constant,
    Input,
    LayerNorm,
    Linear,
    MatMul,
    Reshape,
    RmsNorm,
    Rotary,
    Softmax,
)
from cimc.ir.types import TensorType
from cimc.machine.arch import Arch
from cimc.quant.dialect import (
    QAdd,
    QAttention,
    QConstant,
    QLayerNorm,
    QLinear,
    QMaskedLinear,
    QMatMul,
    QMul,
    QQuantize,
    QRmsNorm,
    QRotary,
    QSoftmax,
    RunTimeMacroOperands,
)

FREE_OPS: tuple[type[Op], ...] = (Input, Constant, QConstant, Reshape)
# ops that emit no instructions: their values are declarations or re-views (plan-values);
# the driver lowers every other node, and a pipeline gives every other node a stage
DECLARED: tuple[type[Op], ...] = (*FREE_OPS, QQuantize)
CONSTANTS: tuple[type[Op], ...] = (Constant, QConstant)
LINEAR_OPS: tuple[type[Op], ...] = (Linear, QLinear, QMaskedLinear)
MATMUL_OPS: tuple[type[Op], ...] = (MatMul, QMatMul)
ATTENTION_OPS: tuple[type[Op], ...] = (Attention, QAttention)
# Vector-unit operations per output element of the integer recipes (cimc/quant/recipes.py).
VECTOR_OPS: dict[type[Op], int] = {
    LayerNorm: 8,
    QLayerNorm: 8,
    RmsNorm: 6,
    QRmsNorm: 6,
    Softmax: 6,
    QSoftmax: 6,
    Rotary: 4,
    QRotary: 4,
    QAdd: 3,
    QMul: 2,
}
SOFTMAX_OPS_PER_SCORE = 6  # max, subtract, exp table, sum, divide, requantize


def workload_from_graph(graph: Graph) -> Workload:
    """The work of one run of `graph`, in its topological order."""
    items: list[WorkItem] = []
    provides: dict[str, tuple[str, ...]] = {}  # node -> work items its value depends on
    for node in graph.nodes():
        deps = _deps(node, provides)
        if type(node.op) in FREE_OPS:
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
    name, kind = node.name, type(node.op)
    types = graph.input_types(node)
    if kind in LINEAR_OPS or (kind in MATMUL_OPS and _constant_matrix(graph, node)):
        k, n = _weight_shape(node, types)
        bits = node.op.plan.weight_bits if isinstance(node.op, QLinear) else 8
        return [MatmulLayer(name, k, n, _rows(types[0]), depends_on=deps, weight_bits=bits)]
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
        if type(operand.op) not in CONSTANTS:
            sizes.append(math.prod(operand.type.shape))
    return max(1, *sizes)


def _weight_shape(node: Node, types: Sequence[TensorType]) -> tuple[int, int]:
    if isinstance(node.op, QLinear):  # q.linear keeps its int8 weight in the plan
        k, n = node.op.plan.weight.shape
        return int(k), int(n)
    return types[1].shape[0], types[1].shape[1]


def _constant_matrix(graph: Graph, node: Node) -> bool:
    right = graph.node(node.inputs[1])
    return type(right.op) is Constant and right.type.rank == 2


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


def reserved_macros(graph: Graph, arch: Arch) -> int:
    """Macros per core kept from the weights for run-time operands: the K^T and V tiles of
    one attention head, or a matmul's right operand (at most all macros but one)."""
    rows, cols = arch.macro.rows, arch.macro.cols
    need = 0
    for node in graph.nodes():
        if isinstance(node.op, RunTimeMacroOperands):
            shapes = node.op.macro_operands(graph.input_types(node))
            need = max(need, sum(_tiles(k, n, rows, cols) for k, n in shapes))
    return min(need, arch.core.macros - 1)


def _tiles(k: int, n: int, rows: int, cols: int) -> int:
    return -(-k // rows) * -(-n // cols)
