"""idioms-activation: decomposed GELU (erf and tanh forms) -> gelu, x*sigmoid(x) -> silu.

erf GELU:  x * 0.5 * (1 + erf(x / sqrt(2)))          (any association of the product)
tanh GELU: x * 0.5 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cimc.ir.graph import Graph, Node
from cimc.ir.ops import Add, Div, Erf, Gelu, Mul, Pow, Sigmoid, Silu, Tanh
from cimc.passes.idioms_match import const_array, is_scalar, operand_pairs, producer, single_use
from cimc.passes.manager import GraphPass, register_pass

_SQRT2 = math.sqrt(2.0)
_TANH_SCALE = math.sqrt(2.0 / math.pi)


@register_pass
@dataclass(frozen=True)
class ActivationIdioms(GraphPass):
    NAME = "idioms-activation"

    def run(self, graph: Graph) -> bool:
        changed = False
        for node in graph.nodes():
            if node.name not in graph:
                continue
            if isinstance(node.op, Erf | Tanh):
                changed |= _gelu(graph, node)
            elif isinstance(node.op, Sigmoid):
                changed |= _silu(graph, node)
        if changed:
            graph.dead_code_elimination()
        return changed


def _erf_input(graph: Graph, name: str) -> str | None:
    """x when `name` is x / sqrt(2) or x * (1/sqrt(2))."""
    node = graph.node(name)
    if isinstance(node.op, Div) and is_scalar(graph, node.inputs[1], _SQRT2):
        return node.inputs[0]
    if isinstance(node.op, Mul):
        for x, c in operand_pairs(node):
            if is_scalar(graph, c, 1.0 / _SQRT2):
                return x
    return None


def _cube_of(graph: Graph, name: str) -> str | None:
    node = producer(graph, name, Pow)
    if node is not None and isinstance(node.op, Pow) and node.op.exponent == 3.0:
        return node.inputs[0]
    return None


def _tanh_input(graph: Graph, name: str) -> str | None:
    """x when `name` is sqrt(2/pi) * (x + 0.044715 * x^3) (operands in either order)."""
    outer = producer(graph, name, Mul)
    if outer is None:
        return None
    for inner_name, c in operand_pairs(outer):
        inner = producer(graph, inner_name, Add)
        if inner is None or not is_scalar(graph, c, _TANH_SCALE):
            continue
        for x, cubic_name in operand_pairs(inner):
            cubic = producer(graph, cubic_name, Mul)
            if cubic is None:
                continue
            for cube, k in operand_pairs(cubic):
                if is_scalar(graph, k, 0.044715) and _cube_of(graph, cube) == x:
                    return x
    return None


def _factors(graph: Graph, name: str, depth: int = 2) -> list[str]:
    """Leaves of the product tree rooted at `name` (through single-use inner muls)."""
    node = graph.node(name)
    if not isinstance(node.op, Mul) or depth < 0:
        return [name]
    leaves: list[str] = []
    for operand in node.inputs:
        inner = graph.node(operand)
        if isinstance(inner.op, Mul) and single_use(graph, operand) and depth > 0:
            leaves += _factors(graph, operand, depth - 1)
        else:
            leaves.append(operand)
    return leaves


def _product_root(graph: Graph, start: str, x: str) -> str | None:
    """The mul computing x * 0.5 * start, walking up at most two single-use muls."""
    current = start
    for _ in range(2):
        users = graph.users(current)
        if len(users) != 1 or not isinstance(graph.node(users[0]).op, Mul):
            return None
        current = users[0]
        leaves = _factors(graph, current)
        if len(leaves) != 3 or start not in leaves or x not in leaves:
            continue
        rest = [leaf for leaf in leaves if leaf not in (start, x)]
        if len(rest) == 1 and is_scalar(graph, rest[0], 0.5):
            return current
    return None


def _gelu(graph: Graph, node: Node) -> bool:
    if isinstance(node.op, Erf):
        x, approximate = _erf_input(graph, node.inputs[0]), "none"
    else:
        x, approximate = _tanh_input(graph, node.inputs[0]), "tanh"
    if x is None or const_array(graph, x) is not None:
        return False
    users = graph.users(node.name)
    if len(users) != 1:
        return False
    plus_one = graph.node(users[0])
    if not isinstance(plus_one.op, Add):
        return False
    if not any(a == node.name and is_scalar(graph, c, 1.0) for a, c in operand_pairs(plus_one)):
        return False
    root = _product_root(graph, plus_one.name, x)
    if root is None:
        return False
    graph.replace_op(root, Gelu(approximate), [x])
    return True


def _silu(graph: Graph, node: Node) -> bool:
    x = node.inputs[0]
    changed = False
    for user in graph.users(node.name):
        mul = graph.node(user)
        if isinstance(mul.op, Mul) and sorted(mul.inputs) == sorted((x, node.name)):
            graph.replace_op(user, Silu(), [x])
            changed = True
    return changed
