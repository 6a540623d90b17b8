"""canonicalize-layout: shorten chains of reshape/transpose to at most reshape+transpose.

Exporters spell one permutation in several ways (PyTorch's ``k.transpose(-1, -2)`` on a
head-split tensor becomes reshape -> transpose -> reshape in the dynamo export). A chain
of single-use reshapes and transposes moves elements by a fixed permutation; running
it on ``arange`` gives that permutation, and the shortest equivalent among reshape,
transpose, transpose+reshape and reshape+transpose replaces it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from cimc.ir.graph import Graph, Node
from cimc.ir.ops import Reshape, Transpose
from cimc.passes.idioms_match import single_use
from cimc.passes.manager import GraphPass, register_pass

_LAYOUT = (Reshape, Transpose)
_MAX_ELEMENTS = 1 << 22  # simulate chains of up to 4M elements (BERT-large at seq 512)
_MAX_RANK = 5  # the permutation searches try rank! candidates


@register_pass
@dataclass(frozen=True)
class CanonicalizeLayout(GraphPass):
    NAME = "canonicalize-layout"

    def run(self, graph: Graph) -> bool:
        changed = False
        for name in graph.order():
            if name in graph and isinstance(graph.node(name).op, _LAYOUT):
                changed |= _shorten(graph, graph.node(name))
        if changed:
            graph.dead_code_elimination()
        return changed


def _chain(graph: Graph, node: Node) -> tuple[str, list[Node]]:
    """The source value and the layout nodes from it to `node` (source first)."""
    chain = [node]
    source = node.inputs[0]
    while isinstance(graph.node(source).op, _LAYOUT) and single_use(graph, source):
        chain.insert(0, graph.node(source))
        source = chain[0].inputs[0]
    return source, chain


def _shorten(graph: Graph, node: Node) -> bool:
    source, chain = _chain(graph, node)
    if len(chain) < 2:
        return False
    shape = graph.node(source).type.shape
    if int(np.prod(shape)) > _MAX_ELEMENTS:
        return False
    target = _simulate(np.arange(int(np.prod(shape))).reshape(shape), chain)
    plan = _best_plan(shape, target)
    if plan is None or len(plan) >= len(chain):
        return False
    current = source
    for k, op in enumerate(plan[:-1]):
        current = graph.add_node(op, [current], name=f"{node.name}.l{k}", loc=node.loc)
    graph.replace_op(node.name, plan[-1], [current])
    return True


def _simulate(x: np.ndarray, chain: list[Node]) -> np.ndarray:
    for n in chain:
        op = n.op
        if isinstance(op, Reshape):
            x = x.reshape(op.shape)
        elif isinstance(op, Transpose):
            x = x.transpose(op.perm)
    return x


def _best_plan(shape: tuple[int, ...], target: np.ndarray) -> list | None:
    """The shortest op list mapping arange(shape) onto `target`, or None."""
    source = np.arange(target.size).reshape(shape)
    out = tuple(target.shape)
    if np.array_equal(source.reshape(out), target):
        return [Reshape(out)]
    for perm in _perms(shape, out):
        if np.array_equal(source.transpose(perm), target):
            return [Transpose(perm)]
    if max(len(shape), len(out)) > _MAX_RANK:
        return None
    for perm in itertools.permutations(range(len(shape))):
        moved = source.transpose(perm)
        if np.array_equal(moved.reshape(out), target):
            return [Transpose(perm), Reshape(out)]
    for perm in itertools.permutations(range(len(out))):
        mid = tuple(out[i] for i in np.argsort(perm))
        if np.array_equal(source.reshape(mid).transpose(perm), target):
            return [Reshape(mid), Transpose(perm)]
    return None


def _perms(shape: tuple[int, ...], out: tuple[int, ...]) -> list[tuple[int, ...]]:
    if len(shape) != len(out) or len(shape) > _MAX_RANK + 1:
        return []
    return [
        p for p in itertools.permutations(range(len(shape))) if tuple(shape[i] for i in p) == out
    ]
