"""The lowering of every op that emits code, in one table keyed by op class.

The driver (driver.py) calls `table[type(node.op)](emitter, node, node.op)` for each node;
each function below adapts one node (operand views, shapes, the typed op and its plan) to
the builder-level lowering of its module. Extensions pass a table of their own to the
`lower` pass (decode: `{**LOWERINGS, DecodeAttention: ...}`), nothing mutates this one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from cimc.backend.builder.alloc import rows
from cimc.backend.builder.asm import Scratch
from cimc.backend.builder.values import decl_name
from cimc.backend.lower.attention import lower_attention
from cimc.backend.lower.common import Heads
from cimc.backend.lower.elementwise import (
    lower_add,
    lower_mul,
    lower_ramp_unary,
    lower_reduce,
    lower_rescale,
    lower_unary,
    rowwise,
)
from cimc.backend.lower.embedding import gather_rows, lower_embedding
from cimc.backend.lower.emitter import Emitter
from cimc.backend.lower.im2col import lower_im2col
from cimc.backend.lower.integer import LOWERINGS as INTEGER_LOWERINGS
from cimc.backend.lower.linear import lower_linear, lower_matmul
from cimc.backend.lower.linear_copies import lower_linear_copies
from cimc.backend.lower.movement import concat, elem_view, materialize, slice_axis, transpose
from cimc.backend.lower.norm import lower_norm
from cimc.backend.lower.predicted_linear import lower_predicted_linear, masked_dense
from cimc.backend.lower.rotary import lower_rotary
from cimc.backend.lower.softmax import lower_softmax
from cimc.backend.lower.sparse_linear import lower_sparse_linear
from cimc.backend.lower.tiles import auto_split, place_tiles
from cimc.backend.stream.prefetch import layer_image
from cimc.errors import CimcError
from cimc.ir.graph import Node
from cimc.ir.op_base import Op
from cimc.ir.ops import Cast, Concat, Embedding, Expand, Gather, Im2col, Slice, Transpose
from cimc.ir.types import DType
from cimc.machine.program import View
from cimc.quant.dialect import (
    QAdd,
    QAttention,
    QEmbedding,
    QLayerNorm,
    QLinear,
    QLut,
    QMaskedLinear,
    QMatMul,
    QMul,
    QRampLut,
    QReduce,
    QRequant,
    QRmsNorm,
    QRotary,
    QSoftmax,
)
from cimc.quant.plans import RescalePlan, RotaryPlan

Lowering = Callable[[Emitter, Node, Any], None]  # (emitter, node, node.op as its class)
LoweringTable = Mapping[type[Op], Lowering]


def _linear(em: Emitter, node: Node, op: QLinear) -> None:
    x, y, name = em.operand(node, 0), em.result(node), em.name(node)
    assert em.stream is not None  # the map pass plans every graph with a q.linear
    slots = em.stream.slots[node.name]
    if em.sparsity is not None and node.name in em.sparsity:
        cached = node.name in em.sparsity.cached  # rows in flash, window cache in DRAM
        window = em.sparsity.window if cached else None
        bundled = em.bundled.get(node.name)  # the up-projection's records hold the rows
        lower_sparse_linear(em.b, x, y, op.plan, slots, name, window, bundled)
        return
    image = layer_image(em.stream, node.name)
    copies = em.stream.copies.get(node.name, ())
    if copies:  # duplicated by the map pass: the rows split between the copies
        lower_linear_copies(em.b, x, y, op.plan, (slots, *copies), name, image)
        return
    lower_linear(em.b, x, y, op.plan, slots=slots, name=name, weight_image=image)


def _masked_linear(em: Emitter, node: Node, op: QMaskedLinear) -> None:
    """Only the predicted columns when plan-sparsity made the layer `predicted`, else the
    dense layer masked afterwards (cimc/backend/lower/predicted_linear.py)."""
    x, mask, y, name = em.operand(node, 0), em.operand(node, 1), em.result(node), em.name(node)
    assert em.stream is not None
    slots = em.stream.slots[node.name]
    if em.sparsity is not None and node.name in em.sparsity.predicted:
        cached = node.name in em.sparsity.cached  # columns in flash, window cache in DRAM
        window = em.sparsity.window if cached else None
        pair = em.sparsity.bundle_of(node.name)
        down = em.graph.node(pair[1]).op if pair is not None else None
        assert down is None or isinstance(down, QLinear)
        plan = down.plan if down is not None else None
        parts = lower_predicted_linear(em.b, x, mask, y, op.plan, slots, name, window, plan)
        if pair is not None and parts is not None:
            em.bundled[pair[1]] = parts
        return
    image = layer_image(em.stream, node.name)
    masked_dense(em.b, x, mask, y, op.plan, slots, name, image)


def _matmul(em: Emitter, node: Node, op: QMatMul) -> None:
    """Batched a[..., M, K] @ b[..., K, N]: one 2-D product per batch index."""
    a_t, b_t = em.shape(node, 0), em.shape(node, 1)
    m, k = a_t[-2], a_t[-1]
    batch = int(np.prod(node.type.shape[:-2], dtype=np.int64))
    b_batch = int(np.prod(b_t[:-2], dtype=np.int64))
    if int(np.prod(a_t[:-2], dtype=np.int64)) != batch or b_batch not in (1, batch):
        raise CimcError("q.matmul broadcasts only the right operand's batch of 1", node.where)
    a, bm, y = em.operand(node, 0), em.operand(node, 1), em.result(node)
    slots = _dynamic_slots(em, rows(a, 0, m), k, b_t[-1])
    for i in range(batch):
        j = i if b_batch > 1 else 0
        lower_matmul(
            em.b,
            rows(a, i * m, (i + 1) * m),
            rows(bm, j * k, (j + 1) * k),
            rows(y, i * m, (i + 1) * m),
            op.plan,
            slots=slots,
            name=em.name(node),
        )


def _dynamic_slots(em: Emitter, a: View, k: int, n: int) -> tuple | None:
    """Run-time operands take the macros the streaming plan left free (None: any macro)."""
    pool = em.reserved_macros()
    if not pool:
        return None
    slots = place_tiles(em.b, k, n, split=auto_split(em.b, a, n))
    return tuple(replace(s, macro=pool[s.macro % len(pool)]) for s in slots)


def _binary(function: Callable[..., None]) -> Lowering:
    """add / mul: the full-shape operand first, the other as a 2-D broadcast."""

    def lower(em: Emitter, node: Node, op: QAdd | QMul) -> None:
        shapes = [em.shape(node, 0), em.shape(node, 1)]
        plan: Any = op.plan
        first = 1 if shapes[0] != node.type.shape and shapes[1] == node.type.shape else 0
        if first == 1 and isinstance(op, QAdd):  # a*Ma + b*Mb is symmetric
            plan = replace(op.plan, mult_a=op.plan.mult_b, mult_b=op.plan.mult_a)
        full = em.operand(node, first)
        if shapes[first] != node.type.shape:
            full = em.expanded(node, first, node.type.shape)
        other = em.broadcast(node, 1 - first, node.type.shape)
        function(em.b, full, other, em.result(node), plan)

    return lower


def _requant(em: Emitter, node: Node, op: QRequant) -> None:
    lower_rescale(em.b, em.operand(node, 0), em.result(node), RescalePlan(op.plan))


def _lut(em: Emitter, node: Node, op: QLut) -> None:
    name = f"{em.name(node)}.lut"
    lower_unary(em.b, em.operand(node, 0), em.result(node), op.plan, name=name)


def _reduce(em: Emitter, node: Node, op: QReduce) -> None:
    """A reduction over trailing axes: each row of the [outer x inner] view is reduced."""
    shape = em.shape(node, 0)
    first = len(shape) - len(op.axes)
    if op.axes != tuple(range(first, len(shape))):
        raise CimcError(
            f"q.reduce over axes {list(op.axes)} of {list(shape)} has no lowering: only "
            "trailing axes reduce (transpose the reduced axes last)",
            node.where,
        )
    outer, inner = math.prod(shape[:first]), math.prod(shape[first:])
    x = elem_view(em.operand(node, 0), 0, outer, inner)
    lower_reduce(em.b, x, elem_view(em.result(node), 0, outer, 1), op.plan)


def _ramp_lut(em: Emitter, node: Node, op: QRampLut) -> None:
    name = f"{em.name(node)}.lut"
    lower_ramp_unary(em.b, em.operand(node, 0), em.result(node), op.plan, name=name)


def _norm(em: Emitter, node: Node, op: QLayerNorm | QRmsNorm) -> None:
    lower_norm(em.b, em.operand(node, 0), em.result(node), op.plan, name=em.name(node))


def _embedding(em: Emitter, node: Node, op: QEmbedding) -> None:
    ids, y, space = em.operand(node, 0), em.result(node), em.table_space(node)
    name = em.name(node)
    if name in {decl_name(out) for out, _ in em.graph.outputs}:
        name = f"{name}.table"  # the lookup is a graph output of the same name (ONNX)
    lower_embedding(em.b, ids, y, op.plan, table_space=space, name=name)


def _int_embedding(em: Emitter, node: Node, op: Embedding) -> None:
    """A lookup in an integer table (a gathered buffer): `gather` from its declaration."""
    if node.type.dtype.is_float:
        raise CimcError("embedding of a float table has no lowering: quantize it", node.where)
    gather_rows(em.b, em.operand(node, 0), em.result(node), em.operand(node, 1))


def _softmax(em: Emitter, node: Node, op: QSoftmax) -> None:
    mask = em.broadcast(node, 1, node.type.shape) if len(node.inputs) > 1 else None
    lower_softmax(
        em.b, em.operand(node, 0), em.result(node), op.plan, mask=mask, name=em.name(node)
    )


def _heads(view: View, shape: tuple[int, ...]) -> Heads:
    """A [B, H, S, D] value stored head-major: a [B*H*S x D] view."""
    return Heads(view, shape[0], shape[1], shape[2], shape[3], head_major=True)


def _attention(em: Emitter, node: Node, op: QAttention) -> None:
    q, k, v = (_heads(em.operand(node, i), em.shape(node, i)) for i in range(3))
    mask = None
    m = op.mask_index(len(node.inputs))
    if m is not None:
        mask = _attention_mask(em, node, m, q.batch, q.seq, k.seq)
    bias = _attention_bias(em, node, k.seq) if op.bias else None
    out = _heads(em.result(node), node.type.shape)
    macros = em.reserved_macros() or None
    lower_attention(
        em.b, q, k, v, out, op.plan, mask=mask, name=em.name(node), macros=macros, bias=bias
    )


def _attention_bias(em: Emitter, node: Node, sk: int) -> tuple[View, tuple[int, int, int]]:
    """The bias as [Bb*Hb*Sb x Sk] rows and (Bb, Hb, Sb); a bias broadcast along the keys
    is materialized first."""
    k = len(node.inputs) - 1
    shape = em.shape(node, k)
    b4 = (1,) * (4 - len(shape)) + shape
    view = em.operand(node, k)
    if b4[3] != sk:
        b4 = (*b4[:3], sk)
        view = em.expanded(node, k, b4)
    return view, (b4[0], b4[1], b4[2])


def _attention_mask(em: Emitter, node: Node, k: int, batch: int, sq: int, sk: int) -> View:
    """The bool mask (operand k) as [B x Sk] (same for every head and query) or [B*Sq x Sk];
    a mask shared by the batch (a causal or padding table [Sq, Sk]) is materialized per
    batch element first."""
    shape = em.shape(node, k)
    m = (1,) * (4 - len(shape)) + shape
    if m[1] == 1 and m[0] in (1, batch) and m[2] in (1, sq) and m[3] == sk:
        if m[0] != batch:
            return em.expanded(node, k, (batch, 1, m[2], sk))
        return em.operand(node, k)
    raise CimcError(
        f"attention mask of shape {list(shape)} is not [B, 1, 1 or Sq, Sk]; per-head masks "
        "have no lowering yet",
        node.where,
    )


def _rotary(em: Emitter, node: Node, op: QRotary) -> None:
    """[B, H, S, D] values are head-major views; other ranks go as plain views."""
    x: View | Heads = em.operand(node, 0)
    y: View | Heads = em.result(node)
    if len(node.type.shape) == 4:
        x, y = (
            _heads(em.operand(node, 0), node.type.shape),
            _heads(em.result(node), node.type.shape),
        )
    lower_rotary(em.b, x, y, _table_plan(node, op.plan), name=em.name(node))


def _table_plan(node: Node, plan: RotaryPlan) -> RotaryPlan:
    """The rotary plan with [S, D] tables: exporters may give [1, 1, S, D] (same values)."""
    cos, sin = plan.cos, plan.sin
    if cos.ndim > 2 and all(d == 1 for d in cos.shape[:-2] + sin.shape[:-2]):
        return replace(plan, cos=cos.reshape(cos.shape[-2:]), sin=sin.reshape(sin.shape[-2:]))
    if cos.ndim != 2:
        raise CimcError(f"rotary tables of shape {list(cos.shape)} are not [S, D]", node.where)
    return plan


# ---------------------------------------------------------------- data movement


def _transpose(em: Emitter, node: Node, op: Transpose) -> None:
    transpose(em.b, em.operand(node, 0), em.shape(node, 0), op.perm, em.result(node))


def _slice(em: Emitter, node: Node, op: Slice) -> None:
    x, shape = em.operand(node, 0), em.shape(node, 0)
    slice_axis(em.b, x, shape, op.axis, op.start, op.stop, op.step, em.result(node))


def _gather(em: Emitter, node: Node, op: Gather) -> None:
    x, shape = em.operand(node, 0), em.shape(node, 0)
    slice_axis(em.b, x, shape, op.axis, op.index, op.index + 1, 1, em.result(node))


def _concat(em: Emitter, node: Node, op: Concat) -> None:
    srcs = [(em.operand(node, k), em.shape(node, k)) for k in range(len(node.inputs))]
    concat(em.b, srcs, op.axis % len(node.type.shape), em.result(node), node.type.shape)


def _expand(em: Emitter, node: Node, op: Expand) -> None:
    s = em.shape(node, 0)
    s = (1,) * (len(node.type.shape) - len(s)) + s
    materialize(em.b, em.operand(node, 0), s, em.result(node), node.type.shape)


def _im2col(em: Emitter, node: Node, op: Im2col) -> None:
    value = int(op.pad_value)  # on codes: the quantizer made it finite and integral
    lower_im2col(em.b, em.operand(node, 0), em.shape(node, 0), op.window, value, em.result(node))


def _cast(em: Emitter, node: Node, op: Cast) -> None:
    """To bool: x != 0 as i8 0/1 (`sel`); between integer types: a range-checked `mov`."""
    b, to_bool = em.b, node.type.dtype is DType.BOOL

    def body(sc: Scratch, ins: list[View], out: View) -> None:
        if to_bool:
            b.emit(sc.core, "sel", out, ins[0], 1, 0)
        else:
            b.emit(sc.core, "mov", out, ins[0])

    rowwise(b, [em.operand(node, 0)], em.result(node), body, 0)


LOWERINGS: dict[type[Op], Lowering] = {
    QLinear: _linear,
    QMaskedLinear: _masked_linear,
    QMatMul: _matmul,
    QAdd: _binary(lower_add),
    QMul: _binary(lower_mul),
    QRequant: _requant,
    QLut: _lut,
    QReduce: _reduce,
    QRampLut: _ramp_lut,
    QLayerNorm: _norm,
    QRmsNorm: _norm,
    QSoftmax: _softmax,
    QAttention: _attention,
    QEmbedding: _embedding,
    QRotary: _rotary,
    Transpose: _transpose,
    Slice: _slice,
    Gather: _gather,
    Concat: _concat,
    Expand: _expand,
    Cast: _cast,
    Im2col: _im2col,
    Embedding: _int_embedding,
    **INTEGER_LOWERINGS,
}
