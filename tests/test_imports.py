"""Imports run one way: no module of cimc imports itself back, packages import only the
layers below them (ARCHITECTURE.md), and the core IR knows no dialect.

Every `import` counts: at module level, inside functions and under TYPE_CHECKING alike,
since each is a dependency a reader has to follow.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1] / "cimc"

# Bottom to top; a package may import its own layer and the layers before it.
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "cimc.errors",
        "cimc.resources",
        "cimc.progress",
        "cimc.version",
        "cimc.extras",
        "cimc.gc_pause",
    ),
    ("cimc.machine",),
    ("cimc.ir",),
    ("cimc.reference",),
    ("cimc.quant",),
    ("cimc.passes",),
    ("cimc.importers", "cimc.zoo"),
    ("cimc.api", "cimc.signature"),
    ("cimc.backend.plan",),
    ("cimc.backend.builder",),
    ("cimc.backend.stream",),
    ("cimc.backend.lower",),
    ("cimc.backend.program_passes",),
    ("cimc.backend.stages", "cimc.backend"),
    ("cimc.pipeline", "cimc.divergence", "cimc.inspect"),
    ("cimc.verify", "cimc.plots"),
    ("cimc.model",),
    ("cimc.dynamo",),
    ("cimc.decode",),
    ("cimc.sweep",),
    ("cimc.docs", "cimc.commands", "cimc.dialects"),
    ("cimc.cli", "cimc.__main__", "cimc.completion", "cimc"),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_in(text: str) -> Iterator[str]:
    """The cimc modules a source text imports, anywhere in it."""
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
            yield from (n for n in [node.module, *names] if n in MODULES)
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name in MODULES)


def imported(module: str) -> Iterator[str]:
    return imports_in(MODULES[module].read_text())


def import_graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(MODULES)
    graph.add_edges_from((m, t) for m in MODULES for t in imported(m) if t != m)
    return graph


def layer_of(module: str) -> int:
    """The index of the most specific layer entry that contains `module`."""
    best, index = "", -1
    for k, layer in enumerate(LAYERS):
        for package in layer:
            if (module == package or module.startswith(package + ".")) and len(package) > len(best):
                best, index = package, k
    assert index >= 0, f"{module} is in no layer of tests/test_imports.py: add it"
    return index


def test_no_import_cycles() -> None:
    cycles = [sorted(c) for c in nx.strongly_connected_components(import_graph()) if len(c) > 1]
    assert cycles == []


def test_packages_import_only_their_layer_and_below() -> None:
    upward = [
        f"{a} -> {b}"
        for a, b in import_graph().edges
        if layer_of(b) > layer_of(a) and not a.startswith(b + ".")  # a package's own __init__
    ]
    assert upward == []


@pytest.mark.parametrize("dialect", ["cimc.quant", "cimc.decode", "cimc.backend"])
def test_the_core_ir_holds_no_dialect(dialect: str) -> None:
    graph = import_graph()
    found = [
        f"{m} -> {t}"
        for m in MODULES
        if m.startswith("cimc.ir")
        for t in graph.successors(m)
        if t.startswith(dialect)
    ]
    assert found == []


def test_the_walker_sees_function_level_and_type_checking_imports() -> None:
    """The checks above would pass vacuously if lazy imports were invisible to the walker."""
    text = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from cimc.ir import graph\n"
        "def f():\n    from cimc.machine.program import View\n    import cimc.errors\n"
    )
    found = set(imports_in(text))
    assert found == {"cimc.ir", "cimc.ir.graph", "cimc.machine.program", "cimc.errors"}
