"""idioms-gqa: attention on repeat_kv(k), repeat_kv(v) -> attention on k, v (Hkv heads).

repeat_kv(k0, n) = reshape(expand(x[B, H, 1, S, D], [B, H, n, S, D]), [B, H*n, S, D])

x may be any spelling of k0 with a unit axis inserted; k0 is re-derived from it by a
reshape that canonicalize-layout then merges with x's own layout chain.
"""

from __future__ import annotations

from dataclasses import dataclass

from cimc.ir.graph import Graph, Node
from cimc.ir.ops import Attention, Expand, Reshape
from cimc.passes.manager import register_pass
from cimc.passes.patterns import NoMatch, Pattern, PatternPass


@dataclass(frozen=True)
class Repeated:
    """k and v as [B, H, 1, S, D] values (before the expand), repeated `n` times."""

    k: Node
    v: Node
    n: int


def _repeated(graph: Graph, name: str) -> tuple[Node, int] | None:
    """(x, n) when `name` is repeat_kv of x[B, H, 1, S, D] n times."""
    merged = graph.node(name)
    if not isinstance(merged.op, Reshape):
        return None
    expanded = graph.node(merged.inputs[0])
    if not isinstance(expanded.op, Expand) or expanded.type.rank != 5:
        return None
    split = graph.node(expanded.inputs[0])
    b, h, one, s, d = split.type.shape
    n = expanded.type.shape[2]
    if one != 1 or expanded.type.shape != (b, h, n, s, d) or merged.type.shape != (b, h * n, s, d):
        return None
    return split, n


def _match(graph: Graph, node: Node) -> Repeated | NoMatch:
    k, v = _repeated(graph, node.inputs[1]), _repeated(graph, node.inputs[2])
    if k is None or v is None:
        return NoMatch("k or v is not reshape(expand(x[B, H, 1, S, D]))")
    if k[1] != v[1]:
        return NoMatch("k and v are repeated a different number of times")
    return Repeated(k[0], v[0], k[1])


def _rewrite(graph: Graph, node: Node, m: Repeated) -> None:
    k0, v0 = (_unsplit(graph, x) for x in (m.k, m.v))
    graph.replace_op(node.name, node.op, [node.inputs[0], k0, v0, *node.inputs[3:]])


def _unsplit(graph: Graph, split: Node) -> str:
    b, h, _, s, d = split.type.shape
    return graph.add_node(Reshape((b, h, s, d)), [split.name], f"{split.name}.kv", split.loc)


GQA = Pattern("repeat-kv", Attention, _match, _rewrite)


@register_pass
@dataclass(frozen=True)
class GroupedQueryAttention(PatternPass):
    NAME = "idioms-gqa"
    PATTERNS = (GQA,)
