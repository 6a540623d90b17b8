"""idioms-attention: scaled dot-product attention spelled out by exporters -> attention.

    p = softmax(matmul(q * s1, kT * s2) * s3 + additive_mask [+ ...]);  out = matmul(p, v)
    (or masked with where(m, scores, -big); scale by mul or div; kT a transpose of k;
    any other float term added to the scores is an additive bias: attention(bias=True))

q/k/v are brought back to [B, H, S, D]; GQA's repeat_kv (reshape -> expand -> reshape)
is undone by idioms-gqa so k/v keep their Hkv heads; the additive mask becomes a boolean operand
(idioms_mask), and a constant causal triangle becomes ``causal=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cimc.ir.graph import Graph, Node
from cimc.ir.ops import (
    Add,
    Attention,
    Div,
    Equal,
    LogicalAnd,
    MatMul,
    Mul,
    ReduceMax,
    Softmax,
    Transpose,
    Where,
)
from cimc.passes.idioms_mask import (
    BLOCKED,
    MaskPlan,
    build_mask,
    plan_bool_mask,
    split_causal,
    strip_broadcasts,
)
from cimc.passes.idioms_match import const_array, operand_pairs, scalar, scalar_operand
from cimc.passes.manager import register_pass
from cimc.passes.patterns import NoMatch, Pattern, PatternPass

_SWAP_LAST = (0, 1, 3, 2)


@dataclass(frozen=True)
class Match:
    q: str
    kt: str
    v: str
    scale: float
    masks: tuple[MaskPlan, ...]
    out: str
    biases: tuple[Bias, ...] = ()


def _unscale(graph: Graph, name: str) -> tuple[str, float]:
    """(x, s) for x * s, s * x or x / (1/s) with scalar constant s; else (name, 1)."""
    node = graph.node(name)
    if isinstance(node.op, Mul):
        found = scalar_operand(graph, node)
        if found is not None:
            inner, s = _unscale(graph, found[0])
            return inner, s * found[1]
    if isinstance(node.op, Div):
        d = scalar(graph, node.inputs[1])
        if d:
            inner, s = _unscale(graph, node.inputs[0])
            return inner, s / d
    return name, 1.0


def _scores(graph: Graph, name: str) -> tuple[Node, float] | None:
    inner, s = _unscale(graph, name)
    node = graph.node(inner)
    return (node, s) if isinstance(node.op, MatMul) else None


def _peel_masks(graph: Graph, name: str) -> tuple[str, list[MaskPlan], list[Bias]] | None:
    """Walk from the softmax input through mask adds / where-masking / additive biases to
    the scores: (scores, masks, bias terms), or None when it does not reach them."""
    if _scores(graph, name) is not None:
        return name, [], []
    node = graph.node(name)
    if isinstance(node.op, Add):
        for s, m in operand_pairs(node):
            inner = _peel_masks(graph, s)
            if inner is None:
                continue
            split = _split_additive(graph, m)
            if split is not None:
                return inner[0], inner[1] + split[0], inner[2] + split[1]
    elif isinstance(node.op, Where):
        cond, a, b = node.inputs
        fill = scalar(graph, b)
        if fill is not None and fill <= BLOCKED:
            inner = _peel_masks(graph, a)
            if inner is not None:
                return inner[0], [*inner[1], MaskPlan("value", name=cond)], inner[2]
    return None


Bias = str | np.ndarray  # a float value of the graph, or a constant to add


def _split_additive(graph: Graph, name: str) -> tuple[list[MaskPlan], list[Bias]] | None:
    """An additive term of the scores as (boolean masks, float biases): 0 / -inf masks,
    where(m, x, -inf) (a mask and the bias x), sums of such terms, constants holding both
    (split entry by entry), any other float value (a bias: T5's positions, ALiBi)."""
    node = graph.node(name)
    if not node.type.dtype.is_float:
        return None
    plan = plan_bool_mask(graph, name)
    if plan is not None:
        return [plan], []
    value = const_array(graph, name)
    if value is not None:
        blocked = value <= BLOCKED
        if not blocked.any():
            return [], [name]
        keep = MaskPlan("const", value=~blocked)
        return [keep], [np.where(blocked, 0, value).astype(np.float32)]
    if isinstance(node.op, Add):
        parts = [_split_additive(graph, i) for i in node.inputs]
        if any(p is None for p in parts):
            return None
        return [m for p in parts if p for m in p[0]], [b for p in parts if p for b in p[1]]
    if isinstance(node.op, Where):
        cond, a, b = node.inputs
        for fill, other, negate in ((b, a, False), (a, b, True)):
            v = scalar(graph, fill)
            if v is not None and v <= BLOCKED:
                inner = _split_additive(graph, other)
                if inner is None:
                    return None
                keep = MaskPlan("value", name=cond)
                if negate:
                    keep = MaskPlan("not", parts=(keep,))
                return [keep, *inner[0]], inner[1]
    return [], [name]


def _guards_masked_rows(graph: Graph, where: Node, softmax: Node) -> bool:
    """where(max(m, last axis) == -inf, 0, softmax(scores + m)): ONNX Attention's zeros
    for fully masked rows, with m one of the terms added to the scores."""
    if not isinstance(where.op, Where) or where.inputs[2] != softmax.name:
        return False
    if scalar(graph, where.inputs[1]) != 0.0:
        return False
    eq = graph.node(where.inputs[0])
    if not isinstance(eq.op, Equal):
        return False
    for rmax, inf in operand_pairs(eq):
        value = scalar(graph, inf)
        top = graph.node(rmax)
        if value is None or value != -np.inf or not isinstance(top.op, ReduceMax):
            continue
        last = top.type.rank - 1
        if top.op.axes != (last,) or not top.op.keepdim:
            continue
        added = graph.node(softmax.inputs[0])
        if isinstance(added.op, Add) and top.inputs[0] in added.inputs:
            return True
    return False


def _match(graph: Graph, softmax: Node) -> Match | NoMatch:
    if softmax.type.rank != 4 or not isinstance(softmax.op, Softmax) or softmax.op.axis != 3:
        return NoMatch("not a softmax over the last axis of [B, H, Sq, Sk] scores")
    probs = softmax.name
    users = graph.users(probs)
    if len(users) == 1 and _guards_masked_rows(graph, graph.node(users[0]), softmax):
        probs = users[0]  # where(row fully masked, 0, p): what attention does anyway
        users = graph.users(probs)
    if len(users) != 1 or graph.is_output(softmax.name) or graph.is_output(probs):
        return NoMatch("the probabilities have other uses than one matmul")
    out = graph.node(users[0])
    if not isinstance(out.op, MatMul) or out.inputs[0] != probs:
        return NoMatch("the probabilities do not multiply values")
    peeled = _peel_masks(graph, softmax.inputs[0])
    if peeled is None:
        return NoMatch("the scores are not matmul(q, k^T) scaled, plus masks")
    scores, plans, biases = peeled
    scores_type = graph.node(scores).type
    for b in biases:
        shape = b.shape if isinstance(b, np.ndarray) else graph.node(b).type.shape
        if len(shape) > 4 or np.broadcast_shapes(shape, scores_type.shape) != scores_type.shape:
            return NoMatch("an additive bias does not broadcast to the scores")
    found = _scores(graph, scores)
    assert found is not None
    mm, s = found
    q, sq = _unscale(graph, mm.inputs[0])
    kt, sk = _unscale(graph, mm.inputs[1])
    shapes = [graph.node(n).type for n in (q, kt, out.inputs[1])]
    if any(t.rank != 4 or not t.dtype.is_float for t in shapes):
        return NoMatch("q, k^T and v are not float [B, H, S, D] values")
    return Match(q, kt, out.inputs[1], s * sq * sk, tuple(plans), out.name, tuple(biases))


def _untranspose(graph: Graph, kt: str, loc: str) -> str:
    node = graph.node(kt)
    if isinstance(node.op, Transpose) and node.op.perm == _SWAP_LAST:
        return node.inputs[0]
    return graph.add_node(Transpose(_SWAP_LAST), [kt], f"{kt}.k", loc)


def _rewrite(graph: Graph, softmax: Node, m: Match) -> None:
    loc = graph.node(m.out).loc
    mask = None
    for plan in m.masks:
        part = build_mask(graph, plan, m.out, loc)
        if part is not None and mask is not None:
            part = graph.add_node(LogicalAnd(), [mask, part], f"{m.out}.mask", loc)
        mask = part if part is not None else mask
    mask = strip_broadcasts(graph, mask)
    sq, sk = softmax.type.shape[2], softmax.type.shape[3]
    mask, causal = split_causal(graph, mask, sq, sk)
    mask = strip_broadcasts(graph, mask)
    k = _untranspose(graph, m.kt, loc)
    operands = [m.q, k, m.v] + ([mask] if mask is not None else [])
    bias = None
    for term in m.biases:
        if isinstance(term, np.ndarray):
            term = graph.add_constant(term, f"{m.out}.bias", loc)
        bias = term if bias is None else graph.add_node(Add(), [bias, term], f"{m.out}.bias", loc)
    if bias is not None:
        operands.append(bias)
    graph.replace_op(m.out, Attention(m.scale, causal, bias=bias is not None), operands)


ATTENTION = Pattern("attention", Softmax, _match, _rewrite)


@register_pass
@dataclass(frozen=True)
class AttentionIdioms(PatternPass):
    NAME = "idioms-attention"
    PATTERNS = (ATTENTION,)
