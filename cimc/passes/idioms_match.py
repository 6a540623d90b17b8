"""Small pattern-matching helpers shared by the idiom passes (no rewriting here)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from cimc.ir.graph import Graph, Node
from cimc.ir.op_base import Op
from cimc.ir.ops import Constant, Mul


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


def factors(graph: Graph, name: str, depth: int = 3) -> list[str]:
    """The operands of a (nested) product, flattened through up to `depth` levels of mul."""
    node = graph.node(name)
    if depth == 0 or not isinstance(node.op, Mul):
        return [name]
    return [f for i in node.inputs for f in factors(graph, i, depth - 1)]


def split_scale(graph: Graph, names: list[str]) -> tuple[float, list[str]]:
    """(the product of the scalar constants among `names`, the other names in order)."""
    scale, rest = 1.0, []
    for name in names:
        value = scalar(graph, name)
        if value is None:
            rest.append(name)
        else:
            scale *= value
    return scale, rest


def close(a: float, b: float, rel: float = 1e-4) -> bool:
    return math.isclose(a, b, rel_tol=rel)


def broadcasts_into(small: tuple[int, ...], big: tuple[int, ...]) -> bool:
    try:
        return tuple(np.broadcast_shapes(small, big)) == tuple(big)
    except ValueError:
        return False
