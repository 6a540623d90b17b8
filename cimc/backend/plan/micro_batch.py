"""The graph at micro-batch size: what a pipeline lowers once per micro-batch.

A pipeline splits the batch B into `count` micro-batches of B / count elements. Each node
is then lowered once per micro-batch, on that micro-batch's rows of its operands and
result. The lowerings read shapes from the graph (heads, rows, broadcast patterns), so they
get a graph of the same nodes, names and order at the micro-batch size: the `micro` graph.
Only two kinds of op spell a shape in their attributes (reshape, expand); their batch entry
is divided by `count`, and every other shape is inferred again by the op's own type rule.
A node whose inferred micro shape is not its full shape with the batch axis divided is an
error: the batch rules (batch_axes.py) and the op disagree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from cimc.backend.plan.batch_axes import WHERE, Axis, batch_axes, batch_size
from cimc.errors import CimcError
from cimc.ir.graph import Graph, Node
from cimc.ir.op_base import Op
from cimc.ir.ops import Expand, Input, Reshape
from cimc.ir.types import TensorType

MAX_MICRO_BATCHES = 8  # by default (the largest stage count tried: plan/pipeline.py)


@dataclass(frozen=True)
class MicroBatches:
    """B split into `count` micro-batches; `axes`: the batch axis of every value."""

    batch: int
    count: int
    axes: Mapping[str, Axis]
    micro: Graph  # the graph at B / count, same node names in the same order

    def carries(self, name: str) -> bool:
        return self.axes[name] is not None

    def row_range(self, name: str, k: int) -> tuple[int, int]:
        """Rows of value `name`'s [rows x cols] storage that micro-batch k owns."""
        rows = math.prod(self.micro.node(name).type.shape[:-1])
        return k * rows, (k + 1) * rows


def split_batch(graph: Graph, count: int | None = None) -> MicroBatches:
    """`graph` split into `count` micro-batches (default: `default_count`)."""
    batch = batch_size(graph)
    count = default_count(batch) if count is None else count
    if batch < 2:
        raise CimcError(
            "batch 1: nothing to pipeline (a pipeline streams batch elements through its "
            "stages); compile a batch (--shape NAME=B,...) or use --mapping spread",
            WHERE,
        )
    if not 2 <= count <= batch or batch % count:
        raise CimcError(
            f"{count} micro-batches do not split the batch of {batch} evenly; use a divisor "
            f"of {batch} greater than 1",
            WHERE,
        )
    axes = batch_axes(graph, batch)
    return MicroBatches(batch, count, axes, _micro_graph(graph, axes, count))


def default_count(batch: int) -> int:
    """One batch element per micro-batch, up to MAX_MICRO_BATCHES: the largest divisor of
    the batch from 2 to that (every micro-batch lowers the whole graph once more, so the
    program grows with the count; past the stages, more micro-batches only shorten the
    pipe's fill and drain); a batch with no such divisor (a prime) one element each."""
    divisors = [d for d in range(2, min(batch, MAX_MICRO_BATCHES) + 1) if batch % d == 0]
    return max(divisors, default=batch)


def _micro_graph(graph: Graph, axes: Mapping[str, Axis], count: int) -> Graph:
    micro = Graph(graph.name)
    for node in graph.nodes():
        axis = axes[node.name]
        want = _divided(node.type, axis, count)
        if isinstance(node.op, Input):
            micro.add_input(node.name, want, node.op.meaning, node.loc)
        else:
            name = micro.add_node(_micro_op(node, axis, count), node.inputs, node.name, node.loc)
            assert name == node.name  # a fresh graph, names added in the same order
        got = micro.node(node.name).type
        if got != want:
            raise CimcError(
                f"at the micro-batch size the op gives {got}, not {want}; use --mapping spread",
                f"{WHERE} at {node.where}",
            )
    micro.set_outputs(graph.outputs)
    return micro


def _divided(t: TensorType, axis: Axis, count: int) -> TensorType:
    if axis is None:
        return t
    shape = list(t.shape)
    shape[axis] //= count
    return TensorType(tuple(shape), t.dtype)


def _micro_op(node: Node, axis: Axis, count: int) -> Op:
    """The op with its spelled-out shape at the micro-batch size (reshape, expand)."""
    op = node.op
    if axis is not None and isinstance(op, Reshape | Expand):
        return replace(op, shape=_divided(node.type, axis, count).shape)
    return op
