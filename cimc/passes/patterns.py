"""Rewrite patterns as data, and the greedy driver that applies them to a graph.

A `Pattern` names the op class(es) of its root node, a `match` that only reads the graph
around a root and returns what the rewrite needs (or a `NoMatch` saying why it does not
apply, as onnxscript's rewriter checks do), and a `rewrite` that changes the graph:

    SILU = Pattern("silu", Mul, match_silu, rewrite_silu)

    @register_pass
    @dataclass(frozen=True)
    class ActivationIdioms(PatternPass):
        NAME = "idioms-activation"
        PATTERNS = (GELU, SILU)

A new idiom is one more Pattern in a pass's list, not a new walker. `apply_patterns` visits
the nodes in topological order (ties: insertion order), rewrites a node with the first
pattern that matches it, and sweeps again until a sweep changes nothing, so the result
depends on the graph and the order of the list only. `explain` says, per pattern, why a
node is not rewritten.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from cimc.ir.graph import Graph, Node
from cimc.ir.op_base import Op
from cimc.passes.manager import GraphPass

M = TypeVar("M")


@dataclass(frozen=True)
class NoMatch:
    """Why a pattern does not apply at a node (falsy, so `if not found:` reads well)."""

    reason: str

    def __bool__(self) -> bool:
        return False


@dataclass(frozen=True)
class Pattern(Generic[M]):
    """One rewrite: `match(graph, root)` -> M or NoMatch (no changes), then
    `rewrite(graph, root, m)` changes the graph; the root keeps its name when the rewrite
    gives it a new op, so its users need no update."""

    name: str
    root: type[Op] | tuple[type[Op], ...]
    match: Callable[[Graph, Node], M | NoMatch]
    rewrite: Callable[[Graph, Node, M], None]

    def try_match(self, graph: Graph, node: Node) -> M | NoMatch:
        if not isinstance(node.op, self.root):
            return NoMatch(f"the root is {node.op.NAME}, not {_root_names(self.root)}")
        return self.match(graph, node)


def apply_patterns(
    graph: Graph, patterns: Sequence[Pattern[Any]], max_sweeps: int = 16, dce: bool = True
) -> bool:
    """Rewrite greedily until a sweep changes nothing (or `max_sweeps` sweeps ran); with
    `dce`, nodes a sweep left without users are removed before the next one."""
    changed = False
    for _ in range(max_sweeps):
        if not _sweep(graph, patterns):
            break
        changed = True
        if dce:
            graph.dead_code_elimination()
    return changed


def _sweep(graph: Graph, patterns: Sequence[Pattern[Any]]) -> bool:
    """One pass over the nodes present when it starts (nodes it adds wait for the next)."""
    changed = False
    for name in graph.order():
        if name not in graph:  # removed by an earlier rewrite of this sweep
            continue
        node = graph.node(name)
        for pattern in patterns:
            if not isinstance(node.op, pattern.root):
                continue
            found = pattern.match(graph, node)
            if not isinstance(found, NoMatch):
                pattern.rewrite(graph, node, found)
                changed = True
                break
    return changed


def first_match(graph: Graph, node: Node, patterns: Sequence[Pattern[Any]]) -> Pattern[Any] | None:
    """The pattern the driver would apply at `node`, or None."""
    for pattern in patterns:
        if not isinstance(pattern.try_match(graph, node), NoMatch):
            return pattern
    return None


def explain(graph: Graph, name: str, patterns: Sequence[Pattern[Any]]) -> list[str]:
    """One line per pattern: whether it matches node %name, and if not, why."""
    node = graph.node(name)
    lines = []
    for pattern in patterns:
        found = pattern.try_match(graph, node)
        verdict = f"no: {found.reason}" if isinstance(found, NoMatch) else "matches"
        lines.append(f"{pattern.name}: {verdict}")
    return lines


@dataclass(frozen=True)
class PatternPass(GraphPass):
    """A graph pass that is a list of patterns run by `apply_patterns`."""

    PATTERNS: ClassVar[tuple[Pattern[Any], ...]] = ()
    SWEEPS: ClassVar[int] = 16

    def run(self, graph: Graph) -> bool:
        return apply_patterns(graph, self.PATTERNS, self.SWEEPS)


def _root_names(root: type[Op] | tuple[type[Op], ...]) -> str:
    classes = root if isinstance(root, tuple) else (root,)
    return " or ".join(c.NAME for c in classes)
