"""check-canonical: report what keeps a graph from the importers' normal form.

The normal form is what makes all exporters of one model give the same op multiset:
constant subgraphs folded, no no-op reshape/cast/transpose/expand/slice, no
reshape-of-reshape style chains, nothing else a simplify pattern rewrites, no duplicated
nodes, no dead nodes. The importers' tests call `canonical_violations(graph)` and expect
an empty list; the pass raises one CimcError listing them.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from cimc.errors import CimcError
from cimc.ir.graph import Graph, Node
from cimc.ir.ops import Constant, Input
from cimc.passes.fold_constants import FoldConstants
from cimc.passes.manager import GraphPass, register_pass
from cimc.passes.patterns import first_match
from cimc.passes.simplify import SIMPLIFY, forwarded_operand, merged_chain

SHOWN = 8  # violations spelled out in the error message


@dataclass(frozen=True)
class Violation:
    node: str
    reason: str

    def __str__(self) -> str:
        return f"%{self.node}: {self.reason}"


def canonical_violations(graph: Graph, max_fold_elements: int = 1 << 16) -> list[Violation]:
    """Every departure from the normal form, in topological order."""
    folder = FoldConstants(max_fold_elements)
    live = _live_nodes(graph)
    seen: dict[Hashable, str] = {}
    found: list[Violation] = []
    for node in graph.nodes():
        reason = _reason(graph, node, folder, live, seen)
        if reason:
            found.append(Violation(node.name, reason))
    return found


def _reason(
    graph: Graph, node: Node, folder: FoldConstants, live: set[str], seen: dict[Hashable, str]
) -> str:
    if isinstance(node.op, Input):
        return ""
    if node.name not in live:
        return "dead: no graph output depends on it"
    if folder.foldable(graph, node):
        return f"{node.op.NAME} of constants only: fold it (fold-constants)"
    forwarded = forwarded_operand(graph, node)
    if forwarded is not None:
        return f"no-op {node.op.NAME}: it only forwards %{forwarded} (simplify)"
    if merged_chain(graph, node) is not None:
        return f"{node.op.NAME} of {node.op.NAME}: merge them into one (simplify)"
    pattern = first_match(graph, node, SIMPLIFY)
    if pattern is not None:
        return f"{node.op.NAME} that simplify rewrites ({pattern.name})"
    if not isinstance(node.op, Constant):  # equal weights may legitimately repeat
        first = seen.setdefault((node.op.key(), node.inputs), node.name)
        if first != node.name:
            return f"duplicate of %{first} (cse)"
    return ""


def _live_nodes(graph: Graph) -> set[str]:
    live: set[str] = set()
    stack = [name for _, name in graph.outputs]
    while stack:
        name = stack.pop()
        if name not in live:
            live.add(name)
            stack.extend(graph.node(name).inputs)
    return live


@register_pass
@dataclass(frozen=True)
class CheckCanonical(GraphPass):
    NAME = "check-canonical"
    max_fold_elements: int = 1 << 16

    def run(self, graph: Graph) -> bool:
        found = canonical_violations(graph, self.max_fold_elements)
        if found:
            shown = "; ".join(str(v) for v in found[:SHOWN])
            more = f" (and {len(found) - SHOWN} more)" if len(found) > SHOWN else ""
            raise CimcError(
                f"{len(found)} node(s) not in canonical form: {shown}{more}", f"@{graph.name}"
            )
        return False
