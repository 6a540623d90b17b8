"""check-canonical names every departure from the normal form; canonicalize removes them all."""

from __future__ import annotations

import pytest
from random_graphs import RandomGraph

from cimc.errors import CimcError
from cimc.ir.parser import parse_graph
from cimc.passes.check_canonical import canonical_violations
from cimc.passes.manager import PassManager, parse_pipeline

TEXT = """graph @g {
  %x = input : f32[2, 3]
  %c = constant dense<[1.0, 2.0, 3.0]> : f32[3]
  %c2 = neg(%c) : f32[3]
  %r = reshape(%x) {shape = [2, 3]} : f32[2, 3]
  %t1 = transpose(%r) {perm = [1, 0]} : f32[3, 2]
  %t2 = transpose(%t1) {perm = [1, 0]} : f32[2, 3]
  %a = add(%t2, %c2) : f32[2, 3]
  %b = add(%t2, %c2) : f32[2, 3]
  %m = mul(%a, %b) : f32[2, 3]
  %dead = exp(%x) : f32[2, 3]
  return "m" = %m
}"""


def test_each_kind_of_violation_is_named() -> None:
    found = [str(v) for v in canonical_violations(parse_graph(TEXT))]
    assert found == [
        "%c2: neg of constants only: fold it (fold-constants)",
        "%r: no-op reshape: it only forwards %x (simplify)",
        "%t2: transpose of transpose: merge them into one (simplify)",
        "%b: duplicate of %a (cse)",
        "%dead: dead: no graph output depends on it",
    ]


def test_pass_reports_them_in_one_error() -> None:
    with pytest.raises(CimcError) as info:
        PassManager(parse_pipeline("check-canonical")).run(parse_graph(TEXT))
    message = str(info.value)
    assert message.startswith("@g: pass check-canonical failed: 5 node(s) not in canonical form")
    assert "%b: duplicate of %a (cse)" in message
    graph = parse_graph(TEXT)
    PassManager(parse_pipeline("canonicalize,check-canonical")).run(graph)
    assert canonical_violations(graph) == []


@pytest.mark.parametrize("seed", range(8))
def test_canonicalize_reaches_the_normal_form(seed: int) -> None:
    graph = RandomGraph(seed).build(30)
    assert canonical_violations(graph)  # random graphs are full of violations
    PassManager(parse_pipeline("canonicalize")).run(graph)
    assert [str(v) for v in canonical_violations(graph)] == []


def test_any_simplify_pattern_is_a_violation() -> None:
    """Beyond no-ops and chains: what else simplify rewrites is named by its pattern."""
    graph = parse_graph(
        """graph @g {
  %x = input : f32[2, 1, 3]
  %t = transpose(%x) {perm = [1, 0, 2]} : f32[1, 2, 3]
  return "t" = %t
}"""
    )
    assert [str(v) for v in canonical_violations(graph)] == [
        "%t: transpose that simplify rewrites (unit-transpose)"
    ]
    PassManager(parse_pipeline("canonicalize")).run(graph)
    assert canonical_violations(graph) == []
