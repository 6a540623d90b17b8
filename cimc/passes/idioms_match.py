"""Small pattern-matching helpers shared by the idiom passes (no rewriting here)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from cimc.ir.graph import Graph, Node
from cimc.ir.op_base import Op
from cimc.ir.ops import Constant


def producer(graph: Graph, name: str, op_class: type[Op] | tuple[type[Op], ...]) -> Node | None:
    """The node called `name` if its op is an `op_class`, else None."""
    node = graph.node(name)
    return node if isinstance(node.op, op_class) else None


def const_array(graph: Graph, name: str) -> np.ndarray | None:
    node = graph.node(name)
    return node.op.value if isinstance(node.op, Constant) else None


def scalar(graph: Graph, name: str) -> float | None:
    """The value of a constant whose elements are all equal (a splatted scalar), else None."""
    value = const_array(graph, name)
    if value is None or value.size == 0:
        return None
    first = value.reshape(-1)[0]
    if not np.all(value == first):
        return None
    return float(first)


def is_scalar(graph: Graph, name: str, expected: float, rtol: float = 1e-4) -> bool:
    value = scalar(graph, name)
    return value is not None and bool(np.isclose(value, expected, rtol=rtol, atol=0.0))


def single_use(graph: Graph, name: str) -> bool:
    return len(graph.users(name)) == 1 and not graph.is_output(name)


def operand_pairs(node: Node) -> Iterator[tuple[str, str]]:
    """Both operand orders of a commutative binary node."""
    a, b = node.inputs
    yield a, b
    if a != b:
        yield b, a


def scalar_operand(graph: Graph, node: Node) -> tuple[str, float] | None:
    """(the run-time operand, the scalar constant) of a binary node, either order."""
    for x, c in operand_pairs(node):
        value = scalar(graph, c)
        if value is not None and const_array(graph, x) is None:
            return x, value
    return None


def broadcasts_into(small: tuple[int, ...], big: tuple[int, ...]) -> bool:
    try:
        return tuple(np.broadcast_shapes(small, big)) == tuple(big)
    except ValueError:
        return False
