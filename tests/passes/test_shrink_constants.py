"""shrink-constants, tested by execution: outputs identical, repeated constants stored once."""

from __future__ import annotations

import numpy as np

from cimc.ir import Graph, TensorType
from cimc.ir import ops as O
from cimc.ir.types import DType
from tests.passes.test_passes_generic import apply, assert_same_function

RNG = np.random.default_rng(0)


def _graph(
    x_shape: tuple[int, ...], const: np.ndarray, op: type = O.Add, const_first: bool = False
) -> Graph:
    g = Graph("g")
    x = g.add_input("x", TensorType(x_shape, DType.F32))
    c = g.add_constant(const.astype(np.float32), name="c")
    y = g.add_node(op(), (c, x) if const_first else (x, c), name="y")
    g.set_outputs({"y": y})
    return g


def _const_shapes(graph: Graph) -> dict[str, tuple[int, ...]]:
    return {n.name: tuple(n.type.shape) for n in graph.nodes() if n.op.NAME == "constant"}


def test_equal_rows_are_stored_once_and_broadcast() -> None:
    row = RNG.standard_normal((1, 1, 6))
    graph = _graph((1, 8, 6), np.repeat(row, 8, axis=1))
    after = apply("shrink-constants,dce", graph)
    assert _const_shapes(after) == {"c_slice": (1, 1, 6)}
    assert_same_function(graph, after)


def test_a_uniform_constant_becomes_one_element_per_axis() -> None:
    graph = _graph((2, 8, 6), np.full((2, 8, 6), 0.5), O.Sub, const_first=True)
    after = apply("canonicalize", graph)
    assert _const_shapes(after) == {"c_slice": (1, 1, 1)}
    assert_same_function(graph, after)


def test_an_axis_only_the_constant_spans_is_kept() -> None:
    # x has one row: the constant's 8 equal rows give the result its 8 rows
    row = RNG.standard_normal((1, 1, 6))
    graph = _graph((1, 1, 6), np.repeat(row, 8, axis=1), O.Mul)
    after = apply("shrink-constants,dce", graph)
    assert _const_shapes(after) == {"c": (1, 8, 6)}
    assert after.node("y").type == graph.node("y").type


def test_distinct_rows_are_kept() -> None:
    graph = _graph((1, 8, 6), RNG.standard_normal((1, 8, 6)), O.Div)
    after = apply("shrink-constants", graph)
    assert _const_shapes(after) == {"c": (1, 8, 6)}


def test_other_users_keep_the_full_constant() -> None:
    g = Graph("g")
    x = g.add_input("x", TensorType((8, 6), DType.F32))
    c = g.add_constant(
        np.repeat(RNG.standard_normal((1, 6)), 8, axis=0).astype(np.float32), name="c"
    )
    y = g.add_node(O.Add(), (x, c), name="y")
    t = g.add_node(O.Transpose((1, 0)), (c,), name="t")  # not elementwise: needs all of c
    g.set_outputs({"y": y, "t": t})
    after = apply("shrink-constants,dce", g)
    assert _const_shapes(after) == {"c": (8, 6), "c_slice": (1, 6)}
    assert after.node("t").inputs == ("c",) and after.node("y").inputs == ("x", "c_slice")
    assert_same_function(g, after)
