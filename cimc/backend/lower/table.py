"""What a node lowering sees (`Emitter`), and the lowering of every q-op by name.

compile.py walks the graph and calls `LOWERINGS[op name](emitter, node)` for each node that
emits code; data movement ops have their table in lower_movement.py (`MOVEMENT`) and
decode q-ops register themselves here (cimc/decode/lower.py). Each function below adapts
one node (operand views, shapes, plan) to the builder-level lowering of its lower_*.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from cimc.backend.builder.alloc import rows
from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.builder.values import ValueStore, decl_name, machine_dtype, rows_cols
from cimc.backend.lower.attention import Heads, lower_attention
from cimc.backend.lower.elementwise import lower_add, lower_mul, lower_rescale, lower_unary
from cimc.backend.lower.embedding import lower_embedding
from cimc.backend.lower.linear import lower_linear, lower_matmul
from cimc.backend.lower.movement import materialize
from cimc.backend.lower.norm import lower_norm
from cimc.backend.lower.rotary import lower_rotary
from cimc.backend.lower.softmax import lower_softmax
from cimc.backend.lower.tiles import TileSlot, auto_split, place_tiles
from cimc.backend.stream.prefetch import StreamSetup, layer_image
from cimc.errors import CimcError
from cimc.ir.graph import Graph, Node
from cimc.machine.program import View


class Emitter:
    """What a node lowering sees: the builder and the views of its operands and result."""

    def __init__(
        self, b: ProgramBuilder, store: ValueStore, graph: Graph, stream: StreamSetup | None
    ) -> None:
        self.b = b
        self.store = store
        self.graph = graph
        self.stream = stream

    def operand(self, node: Node, k: int) -> View:
        return self.store.view(node.inputs[k])

    def result(self, node: Node) -> View:
        return self.store.view(node.name)

    def broadcast(self, node: Node, k: int, shape: tuple[int, ...]) -> View:
        """Operand k as a view that broadcasts to `shape` as 1xC, Rx1, 1x1 or RxC; any
        other broadcast is materialized with strided copies first."""
        s = self._padded(node, k, shape)
        if all(d == 1 for d in s[:-1]) or s[:-1] == shape[:-1]:
            return self.operand(node, k)
        return self.expanded(node, k, (*shape[:-1], s[-1]))

    def expanded(self, node: Node, k: int, shape: tuple[int, ...]) -> View:
        """Operand k broadcast to `shape` in a scratch region of its own."""
        r, c = rows_cols(shape)
        tmp = self.b.region(None, machine_dtype(self.graph.node(node.inputs[k])), r, c)
        materialize(self.b, self.operand(node, k), self._padded(node, k, shape), tmp, shape)
        return tmp

    def _padded(self, node: Node, k: int, shape: tuple[int, ...]) -> tuple[int, ...]:
        own = self.graph.node(node.inputs[k]).type.shape
        return (1,) * (len(shape) - len(own)) + own

    def name(self, node: Node) -> str:
        """The constant-name prefix of a node (its weights become `NAME.w`, ...)."""
        return decl_name(node.name)


Lowerer = Callable[[Emitter, Node], None]


def _plan(node: Node) -> Any:
    """The plan of a q-op (every q-op with a lowering holds one)."""
    return getattr(node.op, "plan")  # noqa: B009  (Op has no `plan`; its q-op subclasses do)


def _linear(em: Emitter, node: Node) -> None:
    x, y, name = em.operand(node, 0), em.result(node), em.name(node)
    assert em.stream is not None  # setup_streaming plans every graph with a q.linear
    slots, image = em.stream.slots[node.name], layer_image(em.stream, node.name)
    lower_linear(em.b, x, y, _plan(node), slots=slots, name=name, weight_image=image)


def _matmul(em: Emitter, node: Node) -> None:
    """Batched a[..., M, K] @ b[..., K, N]: one 2-D product per batch index."""
    a_t, b_t = (em.graph.node(i).type.shape for i in node.inputs)
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
            _plan(node),
            slots=slots,
            name=em.name(node),
        )


def _dynamic_slots(em: Emitter, a: View, k: int, n: int) -> tuple[TileSlot, ...] | None:
    """Run-time operands take the macros the streaming plan left free (None: any macro)."""
    pool = em.stream.reserved if em.stream is not None else ()
    if not pool:
        return None
    slots = place_tiles(em.b, k, n, split=auto_split(em.b, a, n))
    return tuple(replace(s, macro=pool[s.macro % len(pool)]) for s in slots)


def _binary(function: Callable[..., None]) -> Lowerer:
    """add / mul: the full-shape operand first, the other as a 2-D broadcast."""

    def lower(em: Emitter, node: Node) -> None:
        shapes = [em.graph.node(i).type.shape for i in node.inputs]
        plan = _plan(node)
        first = 1 if shapes[0] != node.type.shape and shapes[1] == node.type.shape else 0
        if first == 1 and function is lower_add:  # a*Ma + b*Mb is symmetric
            plan = replace(plan, mult_a=plan.mult_b, mult_b=plan.mult_a)
        full = em.operand(node, first)
        if shapes[first] != node.type.shape:
            full = em.expanded(node, first, node.type.shape)
        other = em.broadcast(node, 1 - first, node.type.shape)
        function(em.b, full, other, em.result(node), plan)

    return lower


def _requant(em: Emitter, node: Node) -> None:
    from cimc.quant.plans import RescalePlan

    lower_rescale(em.b, em.operand(node, 0), em.result(node), RescalePlan(_plan(node)))


def _lut(em: Emitter, node: Node) -> None:
    name = f"{em.name(node)}.lut"
    lower_unary(em.b, em.operand(node, 0), em.result(node), _plan(node), name=name)


def _norm(em: Emitter, node: Node) -> None:
    lower_norm(em.b, em.operand(node, 0), em.result(node), _plan(node), name=em.name(node))


def _embedding(em: Emitter, node: Node) -> None:
    lower_embedding(em.b, em.operand(node, 0), em.result(node), _plan(node), name=em.name(node))


def _softmax(em: Emitter, node: Node) -> None:
    mask = em.broadcast(node, 1, node.type.shape) if len(node.inputs) > 1 else None
    lower_softmax(
        em.b, em.operand(node, 0), em.result(node), _plan(node), mask=mask, name=em.name(node)
    )


def _attention(em: Emitter, node: Node) -> None:
    """Operands [B, H, S, D] are stored head-major: [B*H*S x D] views."""

    def heads(view: View, shape: tuple[int, ...]) -> Heads:
        return Heads(view, shape[0], shape[1], shape[2], shape[3], head_major=True)

    q, k, v = (
        heads(em.operand(node, i), em.graph.node(node.inputs[i]).type.shape) for i in range(3)
    )
    mask = None
    if len(node.inputs) == 4:
        mask = _attention_mask(em, node, q.batch, q.seq, k.seq)
    out = heads(em.result(node), node.type.shape)
    macros = em.stream.reserved if em.stream is not None and em.stream.reserved else None
    lower_attention(em.b, q, k, v, out, _plan(node), mask=mask, name=em.name(node), macros=macros)


def _attention_mask(em: Emitter, node: Node, batch: int, sq: int, sk: int) -> View:
    """The bool mask as [B x Sk] (same for every head and query) or [B*Sq x Sk]."""
    shape = em.graph.node(node.inputs[3]).type.shape
    m = (1,) * (4 - len(shape)) + shape
    view = em.operand(node, 3)
    if m[1] == 1 and m[0] == batch and m[2] in (1, sq) and m[3] == sk:
        return view
    raise CimcError(
        f"attention mask of shape {list(shape)} is not [B, 1, 1 or Sq, Sk]; per-head masks "
        "have no lowering yet",
        node.where,
    )


def _rotary(em: Emitter, node: Node) -> None:
    """[B, H, S, D] values are head-major views; other ranks go as plain views."""
    x, y = em.operand(node, 0), em.result(node)
    if len(node.type.shape) == 4:
        bt, h, s, d = node.type.shape
        x, y = Heads(x, bt, h, s, d, head_major=True), Heads(y, bt, h, s, d, head_major=True)  # type: ignore[assignment]
    lower_rotary(em.b, x, y, _table_plan(node), name=em.name(node))


def _table_plan(node: Node) -> Any:
    """The rotary plan with [S, D] tables: exporters may give [1, 1, S, D] (same values)."""
    plan = _plan(node)
    cos, sin = plan.cos, plan.sin
    if cos.ndim > 2 and all(d == 1 for d in cos.shape[:-2] + sin.shape[:-2]):
        return replace(plan, cos=cos.reshape(cos.shape[-2:]), sin=sin.reshape(sin.shape[-2:]))
    if cos.ndim != 2:
        raise CimcError(f"rotary tables of shape {list(cos.shape)} are not [S, D]", node.where)
    return plan


LOWERINGS: dict[str, Lowerer] = {
    "q.linear": _linear,
    "q.matmul": _matmul,
    "q.add": _binary(lower_add),
    "q.mul": _binary(lower_mul),
    "q.requant": _requant,
    "q.lut": _lut,
    "q.layer_norm": _norm,
    "q.rms_norm": _norm,
    "q.softmax": _softmax,
    "q.attention": _attention,
    "q.embedding": _embedding,
    "q.rotary": _rotary,
}
