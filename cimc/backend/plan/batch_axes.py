"""Which axis of every value is the batch, and whether each op keeps batch elements apart.

Why: a pipeline (cimc/backend/plan/pipeline.py) streams micro-batches (groups of batch
elements) through its stages, so every node runs once per micro-batch on that micro-batch's
rows alone. That is exact only when no op mixes batch elements, and cheap only when a
micro-batch of every value is a contiguous block of rows of its [rows x cols] storage
(then it is a row-sliced view of the value, cimc/backend/lower/micro_store.py). This module
proves both from the graph, op by op, or says in one line which node breaks them.

The batch B is the leading axis of every non-constant graph input (they must agree).
Constants carry no batch axis: they broadcast against it. A value's batch axis follows from
its operands by the op's rule below; an op whose rule is unknown, or that reduces, slices,
gathers, concatenates or multiplies along the batch axis, is refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from cimc.errors import CimcError
from cimc.ir.graph import Graph, Node
from cimc.ir.ops import (
    Add,
    Cast,
    Concat,
    Constant,
    CumSum,
    Embedding,
    Equal,
    Expand,
    Gather,
    Greater,
    Im2col,
    Input,
    Less,
    LogicalAnd,
    LogicalNot,
    LogicalOr,
    Maximum,
    Minimum,
    Mul,
    Reshape,
    Slice,
    Sub,
    Transpose,
    Where,
)
from cimc.quant.dialect import (
    QAdd,
    QAttention,
    QConstant,
    QEmbedding,
    QLayerNorm,
    QLinear,
    QLut,
    QMaskedLinear,
    QMatMul,
    QMul,
    QQuantize,
    QRampLut,
    QReduce,
    QRequant,
    QRmsNorm,
    QRotary,
    QSoftmax,
)

Axis = int | None  # the batch axis of a value; None: the value does not depend on the batch
WHERE = "pipeline"

# ops applied element by element, their operands broadcast numpy-style
BROADCAST = (
    *(QAdd, QMul, QRequant, QLut, QRampLut, Cast),
    *(Add, Sub, Mul, Maximum, Minimum, LogicalAnd, LogicalOr, LogicalNot),
    *(Equal, Less, Greater, Where),
)
# ops over the last axis (or the last two), the leading axes independent
LAST_AXES = {QLayerNorm: 1, QRmsNorm: 1, QSoftmax: 1, QRotary: 1, QLinear: 1, QMaskedLinear: 1}
LEADING = (QEmbedding, Embedding, Im2col)  # the operand's leading axes lead the result


def batch_size(graph: Graph) -> int:
    """B: the leading axis all non-constant graph inputs share."""
    sizes = {n.name: n.type.shape[0] for n in graph.input_nodes() if n.type.rank >= 1}
    if not sizes:
        raise CimcError("the graph has no input with a batch axis to pipeline", WHERE)
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"%{name} {size}" for name, size in sizes.items())
        raise CimcError(
            f"graph inputs disagree on the leading (batch) axis ({listed}); a pipeline needs "
            "one batch axis leading every input",
            WHERE,
        )
    return next(iter(sizes.values()))


def batch_axes(graph: Graph, batch: int) -> dict[str, Axis]:
    """The batch axis of every value, in graph order; a one-line CimcError at the first node
    that mixes batch elements or whose micro-batches are not contiguous rows."""
    axes: dict[str, Axis] = {}
    for node in graph.nodes():
        axis = _axis(graph, node, axes, batch)
        if axis is not None:
            _check_rows(node, axis)
        axes[node.name] = axis
    return axes


def _check_rows(node: Node, axis: int) -> None:
    shape = node.type.shape
    if math.prod(shape[:axis]) != 1 or axis == len(shape) - 1:
        raise CimcError(
            f"the batch is axis {axis} of {list(shape)}: its micro-batches are not whole rows "
            "of the value; use --mapping spread",
            f"{WHERE} at {node.where}",
        )


def _axis(graph: Graph, node: Node, axes: Mapping[str, Axis], batch: int) -> Axis:
    op = node.op
    if isinstance(op, Input):
        return 0 if node.type.rank >= 1 else None
    if isinstance(op, Constant | QConstant):
        return None
    ins = [axes[i] for i in node.inputs]
    if all(a is None for a in ins):
        return None  # computed from constants alone: the same for every batch element
    if isinstance(op, QQuantize):
        return ins[0]
    shapes = [graph.node(i).type.shape for i in node.inputs]
    if isinstance(op, Reshape):
        return _reshape_axis(node, shapes[0], ins[0], batch)
    if isinstance(op, Transpose):
        return op.perm.index(_known(ins[0]))
    if isinstance(op, LEADING):
        return _only(node, ins, 0)
    if isinstance(op, Expand):
        return _aligned(node, shapes, ins, len(node.type.shape), ())
    if isinstance(op, Slice | Gather | CumSum | Concat):
        return _along(node, ins, op.axis)
    if isinstance(op, QReduce):
        axis = _known(ins[0])
        if axis in op.axes:
            _mixes(node, "reduces over the batch")
        return axis if op.keepdim else axis - sum(1 for a in op.axes if a < axis)
    rank = len(node.type.shape)
    if type(op) in LAST_AXES:
        return _aligned(node, shapes, ins, rank, range(rank - LAST_AXES[type(op)], rank))
    if isinstance(op, QMatMul):  # rows of a stay apart; b's K axis (result rank-2) mixes
        out = _aligned(node, shapes, ins, rank, (rank - 1,))
        if ins[1] is not None and out == rank - 2:
            _mixes(node, "multiplies along the batch (its right operand's reduction axis)")
        return out
    if isinstance(op, QAttention):  # [B, H, S, D]: the sequence and head dims mix
        return _aligned(node, shapes, ins, rank, (2, 3))
    if isinstance(op, BROADCAST):
        return _aligned(node, shapes, ins, rank, ())
    raise CimcError(
        f"no batch rule for {op.NAME}: cannot tell whether it keeps batch elements apart; "
        "use --mapping spread",
        f"{WHERE} at {node.where}",
    )


def _known(axis: Axis) -> int:
    assert axis is not None  # the caller checked that an operand carries the batch
    return axis


def _only(node: Node, ins: Sequence[Axis], k: int) -> Axis:
    """The batch axis of operand k; the other operands must not carry the batch."""
    if any(a is not None for i, a in enumerate(ins) if i != k):
        _mixes(node, "takes the batch from a second operand too")
    return ins[k]


def _aligned(
    node: Node,
    shapes: Sequence[tuple[int, ...]],
    ins: Sequence[Axis],
    rank: int,
    mixed: Sequence[int],
) -> int:
    """Operands broadcast against the result (right-aligned): every batch-carrying operand
    must put the batch on the same result axis, and every other operand must be 1 (or
    absent) there. `mixed`: result axes along which the op combines elements."""
    found: set[int] = set()
    for shape, axis in zip(shapes, ins, strict=True):
        if axis is not None:
            found.add(axis + rank - len(shape))
    if len(found) != 1:
        _mixes(node, "aligns the batch of its operands on different axes")
    out = found.pop()
    if out in mixed:
        _mixes(node, "combines elements along the batch")
    for shape, axis in zip(shapes, ins, strict=True):
        at = out - (rank - len(shape))
        if axis is None and 0 <= at < len(shape) and shape[at] != 1:
            raise CimcError(
                f"an operand without the batch has {shape[at]} entries along it "
                f"({list(shape)}); a constant holding per-batch values cannot be split; "
                "use --mapping spread",
                f"{WHERE} at {node.where}",
            )
    return out


def _along(node: Node, ins: Sequence[Axis], axis: int) -> int:
    """Slice / gather / cumsum / concat along `axis`: fine unless it is the batch axis."""
    found = {a for a in ins if a is not None}
    if len(found) != 1 or any(a is None for a in ins):  # concat with a constant part
        _mixes(node, "concatenates batch and non-batch operands")
    out = found.pop()
    if out == axis:
        _mixes(node, "slices, gathers or sums along the batch")
    return out - 1 if isinstance(node.op, Gather) and axis < out else out


def _reshape_axis(node: Node, shape: tuple[int, ...], axis: Axis, batch: int) -> int:
    """The result axis holding whole batch elements: the one after the same number of
    leading elements, a multiple of the batch (merged with leading rows of the rest)."""
    a = _known(axis)
    before, inner = math.prod(shape[:a]), math.prod(shape[a + 1 :])
    out = node.type.shape
    for j, size in enumerate(out):
        if math.prod(out[:j]) == before and size % batch == 0 and inner % (size // batch) == 0:
            return j
        if math.prod(out[:j]) > before:
            break
    raise CimcError(
        f"reshape {list(shape)} -> {list(out)} splits the batch axis; use --mapping spread",
        f"{WHERE} at {node.where}",
    )


def _mixes(node: Node, what: str) -> None:
    raise CimcError(
        f"{node.op.NAME} {what}: micro-batches would not be independent; use --mapping spread",
        f"{WHERE} at {node.where}",
    )
