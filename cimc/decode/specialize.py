"""Row specialization: the capacity-C integer graph of a decoder -> a graph computing n rows.

Every op of a decoder is per token except causal attention and position-dependent
constants. So the graph that computes the rows at run-time positions `cache_position`
([1, n]) is the capacity graph with every token axis cut to n, plus:
- a constant with a token axis (position-embedding rows) becomes a `q.embedding` lookup of
  its rows by position (the table is the whole constant: same values in every program);
- `q.rotary` becomes `decode.rotary` (its table rows looked up by position);
- `q.attention` becomes `decode.attention`: append the n K/V rows to the layer's KV cache,
  attend over the cache (cimc/decode/ops.py).
Prefill is n = P, decode n = 1. Node names are kept, so both programs name their weights
and tables alike and share one constants file. Key axes (attention masks over the C cache
slots) keep their size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cimc.decode.axes import SeqAxes
from cimc.decode.ops import DecodeAttention, DecodeRotary
from cimc.errors import CimcError
from cimc.ir.graph import Graph, Node
from cimc.ir.op_base import Op
from cimc.ir.ops import Constant, Input, Reshape, Slice
from cimc.ir.types import DType, TensorType
from cimc.quant.dialect import QAttention, QConstant, QEmbedding, QRotary, code_dtype
from cimc.quant.plans import EmbeddingPlan, RotaryPlan

POSITIONS = "cache_position"


@dataclass(frozen=True)
class BatchShape:
    """The rows of one program run by sequence: `segments[s]` consecutive rows belong to
    sequence s (its prompt in prefill, one row in a decode step), whose attention reads
    the first `windows[s]` slots of its KV cache."""

    segments: tuple[int, ...]
    windows: tuple[int, ...]

    @property
    def sequences(self) -> int:
        return len(self.segments)

    @property
    def rows(self) -> int:
        return sum(self.segments)

    def starts(self) -> tuple[int, ...]:
        """The first row of each sequence."""
        return tuple(sum(self.segments[:s]) for s in range(len(self.segments)))

    def check(self, capacity: int) -> None:
        if not self.segments or len(self.windows) != len(self.segments):
            raise CimcError("a batch needs one window per sequence", "decode")
        for r, w in zip(self.segments, self.windows, strict=True):
            if not 1 <= r <= w <= capacity:
                raise CimcError(
                    f"{r} rows in a window of {w} slots do not fit the capacity of {capacity}",
                    "decode",
                )


def check_decoder(graph: Graph, axes: SeqAxes) -> None:
    """A decoder: causal attention only, batch 1, outputs with one token axis."""
    attentions = [(n, n.op) for n in graph.nodes() if isinstance(n.op, QAttention)]
    if not attentions:
        raise CimcError("the model has no attention: not a decoder model", "decode")
    for node, op in attentions:
        if op.bias:
            raise CimcError(
                "attention with an additive bias (relative positions, ALiBi) has no decode "
                "lowering yet; compile the model with `cimc compile` instead",
                node.where,
            )
        if not op.plan.causal:
            raise CimcError(
                "attention is not causal: not a decoder model (BERT-like encoders see later "
                "tokens, so they cannot be decoded token by token)",
                node.where,
            )
    for out, value in graph.outputs:
        if len(axes.token.get(value, ())) != 1:
            raise CimcError(
                f"output {out!r} must have one sequence axis (the logits of each position)",
                "decode",
            )
    if POSITIONS in graph:
        raise CimcError(f"the model already has a value named {POSITIONS!r}", "decode")


def specialize(graph: Graph, axes: SeqAxes, rows: int, batch: BatchShape | None = None) -> Graph:
    """The graph computing `rows` rows at the positions given by input `cache_position`;
    `batch`: which rows belong to which sequence and the cache slots each attends (default:
    one sequence, the whole capacity)."""
    batch = batch or BatchShape((rows,), (axes.capacity,))
    if sum(batch.segments) != rows:
        raise CimcError(f"segments {list(batch.segments)} are not {rows} rows", "decode")
    batch.check(axes.capacity)
    check_decoder(graph, axes)
    g = Graph(graph.name)
    pos = g.add_input(POSITIONS, TensorType((1, rows), DType.I64), meaning="position_ids")
    spec = _Specializer(graph, g, axes, rows, pos, batch)
    for node in graph.nodes():
        spec.rebuild(node)
    g.set_outputs([(out, spec.names[value]) for out, value in graph.outputs])
    g.verify()
    return g


class _Specializer:
    def __init__(
        self, src: Graph, dst: Graph, axes: SeqAxes, rows: int, pos: str, batch: BatchShape
    ) -> None:
        self.src, self.dst, self.axes, self.rows, self.pos = src, dst, axes, rows, pos
        self.batch = batch
        self.names: dict[str, str] = {}

    def shape(self, node: Node) -> tuple[int, ...]:
        """The node's shape with its token axes cut to `rows`."""
        token = self.axes.token.get(node.name, ())
        return tuple(self.rows if i in token else d for i, d in enumerate(node.type.shape))

    def rebuild(self, node: Node) -> None:
        ins = tuple(self.names[i] for i in node.inputs)
        op = node.op
        token = self.axes.token.get(node.name, ())
        if isinstance(op, Input):
            t = TensorType(self.shape(node), op.type.dtype)
            new = self.dst.add_input(node.name, t, op.meaning, node.loc)
        elif isinstance(op, Constant | QConstant) and token:
            new = self._position_rows(node)
        elif isinstance(op, QRotary):
            plan = _rotary_tables(node, op.plan, self.axes.rotary[node.name])
            new = self._add(node, DecodeRotary(op.scale, op.bits, plan), (ins[0], self.pos))
        elif isinstance(op, QAttention):
            ins = (*ins[:3], self.pos, *ins[3:])
            new = self._add(node, self._attention(op), ins)
        elif isinstance(op, Reshape):
            new = self._add(node, Reshape(self.shape(node)), ins)
        elif isinstance(op, Slice) and op.axis in self.axes.token.get(node.inputs[0], ()):
            if (op.start, op.stop, op.step) != (0, self.axes.capacity, 1):
                raise CimcError("a slice along the sequence axis cannot be specialized", node.where)
            new = self._add(node, Slice(op.axis, 0, self.rows, 1), ins)
        else:
            new = self._add(node, op, ins)
        if self.dst.node(new).type.shape != self.shape(node):
            raise CimcError(
                f"{op.NAME} does not specialize to {self.rows} rows: got "
                f"{list(self.dst.node(new).type.shape)}, expected {list(self.shape(node))}",
                node.where,
            )
        self.names[node.name] = new

    def _attention(self, op: QAttention) -> DecodeAttention:
        cap, b = self.axes.capacity, self.batch
        if b == BatchShape((self.rows,), (cap,)):  # one sequence, whole cache: the default
            return DecodeAttention(op.scale, op.bits, op.plan, cap)
        return DecodeAttention(op.scale, op.bits, op.plan, cap, b.segments, b.windows)

    def _add(self, node: Node, op: Op, ins: tuple[str, ...]) -> str:
        return self.dst.add_node(op, ins, name=node.name, loc=node.loc)

    def _position_rows(self, node: Node) -> str:
        """A position-dependent constant as a lookup of its rows by position."""
        op = node.op
        (axis,) = self.axes.token[node.name]
        shape = node.type.shape
        if not isinstance(op, QConstant) or any(d != 1 for d in shape[:axis]):
            raise CimcError(
                "a position-dependent constant must hold codes with the sequence axis first "
                "(e.g. position-embedding rows)",
                node.where,
            )
        width = math.prod(shape[axis + 1 :])
        table = np.asarray(op.value).reshape(self.axes.capacity, width)
        plan = EmbeddingPlan(table.astype(code_dtype(op.bits).numpy))
        lookup = QEmbedding(op.scale, op.bits, plan)
        if (1, self.rows, width) == self.shape(node):
            return self._add(node, lookup, (self.pos,))
        rows = self.dst.add_node(lookup, (self.pos,), name=f"{node.name}.rows", loc=node.loc)
        return self._add(node, Reshape(self.shape(node)), (rows,))


def _rotary_tables(node: Node, plan: RotaryPlan, axis: int) -> RotaryPlan:
    """The rotary plan with [C, D] tables (exporters may give [1, 1, C, D])."""
    cos, sin = plan.cos, plan.sin
    if axis != cos.ndim - 2 or any(d != 1 for d in cos.shape[:-2]) or sin.shape != cos.shape:
        raise CimcError(f"rotary tables of shape {list(cos.shape)} are not [C, D]", node.where)
    return RotaryPlan(cos.reshape(cos.shape[-2:]), sin.reshape(sin.shape[-2:]), plan.requant)
