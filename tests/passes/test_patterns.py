"""The pattern driver: a match, a refusal with its reason, the fixed point, determinism."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from idiom_graphs import DECODER_BLOCK

from cimc.ir import Graph
from cimc.ir import ops as O
from cimc.ir.graph import Node
from cimc.ir.parser import parse_graph
from cimc.ir.printer import print_graph
from cimc.passes.idioms import Idioms
from cimc.passes.idioms_activation import SILU, Activation
from cimc.passes.manager import PassManager
from cimc.passes.patterns import NoMatch, Pattern, apply_patterns, explain, first_match
from cimc.reference.float_model import run_graph

SILU_TEXT = """graph @g {
  %x = input : f32[2, 8]
  %y = input : f32[2, 8]
  %s = sigmoid(%x) : f32[2, 8]
  %a = mul(%x, %s) : f32[2, 8]
  %b = mul(%s, %y) : f32[2, 8]
  %c = add(%a, %b) : f32[2, 8]
  return "c" = %c
}"""


def test_a_pattern_matches_and_rewrites() -> None:
    graph = parse_graph(SILU_TEXT)
    found = SILU.try_match(graph, graph.node("a"))
    assert found == Activation("x")
    assert apply_patterns(graph, [SILU])
    assert graph.node("a").op == O.Silu() and graph.node("a").inputs == ("x",)
    assert graph.node("b").op == O.Mul()  # sigmoid(x) * y is no SiLU


def test_a_refusal_says_why() -> None:
    graph = parse_graph(SILU_TEXT)
    refused = SILU.try_match(graph, graph.node("b"))
    assert isinstance(refused, NoMatch) and not refused
    assert refused.reason == "not x * sigmoid(x)"
    assert SILU.try_match(graph, graph.node("c")) == NoMatch("the root is add, not mul")
    assert explain(graph, "b", [SILU]) == ["silu: no: not x * sigmoid(x)"]
    assert explain(graph, "a", [SILU]) == ["silu: matches"]
    assert first_match(graph, graph.node("b"), [SILU]) is None
    assert first_match(graph, graph.node("a"), [SILU]) is SILU


def _match_peel(graph: Graph, node: Node) -> float | NoMatch:
    assert isinstance(node.op, O.Pow)
    if node.op.exponent <= 1.0 or node.op.exponent != int(node.op.exponent):
        return NoMatch("the exponent is not an integer above 1")
    return node.op.exponent


def _peel(graph: Graph, node: Node, exponent: float) -> None:
    """x^n -> x^(n-1) * x; the new pow is a node this sweep does not visit."""
    x = node.inputs[0]
    rest = graph.add_node(O.Pow(exponent - 1), [x], f"{node.name}.p")
    graph.replace_op(node.name, O.Mul(), [rest, x])


PEEL = Pattern("peel-pow", O.Pow, _match_peel, _peel)

POW_TEXT = """graph @g {
  %x = input : f32[3]
  %p = pow(%x) {exponent = 4.0} : f32[3]
  return "p" = %p
}"""


def test_the_driver_sweeps_to_a_fixed_point() -> None:
    graph = parse_graph(POW_TEXT)
    before = graph.copy()
    assert apply_patterns(graph, [PEEL])
    ops = [n.op for n in graph.nodes() if not isinstance(n.op, O.Input)]
    assert ops == [O.Pow(1.0), O.Mul(), O.Mul(), O.Mul()]  # one peel per sweep, 3 sweeps
    assert not apply_patterns(graph, [PEEL])  # a fixed point: nothing left to rewrite
    inputs = {"x": np.array([0.5, -2.0, 3.0], np.float32)}
    np.testing.assert_allclose(run_graph(graph, inputs)["p"], run_graph(before, inputs)["p"])


def test_max_sweeps_bounds_the_rewriting() -> None:
    graph = parse_graph(POW_TEXT)
    assert apply_patterns(graph, [PEEL], max_sweeps=2)
    assert [n.op for n in graph.nodes() if isinstance(n.op, O.Pow)] == [O.Pow(2.0)]


def _always(graph: Graph, node: Node) -> Node:
    return node


def _to(op: O.Op) -> Pattern[Node]:
    return Pattern(f"exp-to-{op.NAME}", O.Exp, _always, lambda g, n, _: g.replace_op(n.name, op))


def test_the_first_pattern_in_the_list_wins() -> None:
    text = 'graph @g {\n  %x = input : f32[3]\n  %e = exp(%x) : f32[3]\n  return "e" = %e\n}'
    for first, second in ((O.Tanh(), O.Sigmoid()), (O.Sigmoid(), O.Tanh())):
        graph = parse_graph(text)
        apply_patterns(graph, [_to(first), _to(second)])
        assert graph.node("e").op == first


_RUN_IDIOMS = """
import sys
sys.path.insert(0, "tests/passes")
import cimc.ir.ops
from idiom_graphs import DECODER_BLOCK
from cimc.ir.parser import parse_graph
from cimc.ir.printer import print_graph
from cimc.passes.idioms import Idioms
from cimc.passes.manager import PassManager
graph = parse_graph(DECODER_BLOCK, random_seed=0)
print(print_graph(PassManager([Idioms()]).run(graph)), end="")
"""


def test_rewriting_is_deterministic() -> None:
    """The same graph in two processes with different string hashing prints the same after
    idioms (no set or dict order leaks into names or node order)."""
    root = Path(__file__).parents[2]
    texts = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(root)}
        run = subprocess.run(
            [sys.executable, "-c", _RUN_IDIOMS], cwd=root, env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        texts.add(run.stdout)
    (text,) = texts
    assert "rms_norm(" in text and "attention(" in text
    graph = parse_graph(DECODER_BLOCK, random_seed=0)
    PassManager([Idioms()]).run(graph)
    assert print_graph(graph) == text
