"""idioms-activation: decomposed GELU (erf and tanh forms) -> gelu, x*sigmoid(x) -> silu.

erf GELU:  0.5 * x * (1 + erf(x / sqrt(2)))
tanh GELU: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))

Each product may be associated and ordered any way, its scalar constants split or merged
(x * 0.5, 0.25 * x * 2, x / sqrt(2), x * (1/sqrt(2))...); x^3 is pow(x, 3) or x * x * x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cimc.ir.graph import Graph, Node
from cimc.ir.ops import Add, Div, Erf, Gelu, Mul, Pow, Sigmoid, Silu, Tanh
from cimc.passes.idioms_match import close, const_array, factors, scalar, split_scale
from cimc.passes.manager import register_pass
from cimc.passes.patterns import NoMatch, Pattern, PatternPass


@dataclass(frozen=True)
class Activation:
    x: str
    approximate: str = "none"  # gelu only


def _match_gelu(graph: Graph, root: Node) -> Activation | NoMatch:
    """At the mul completing 0.5 * x * bracket (bracket = 1 + erf(...) or 1 + tanh(...))."""
    a, b = root.inputs
    scale, rest = split_scale(graph, factors(graph, a) + factors(graph, b))
    if len(rest) != 2 or not close(scale, 0.5):
        return NoMatch("not a product of 0.5 and two run-time values")
    for x, bracket in (rest, rest[::-1]):
        kind = _gelu_bracket(graph, bracket, x)
        if kind is not None and const_array(graph, x) is None:
            return Activation(x, kind)
    return NoMatch("neither factor is 1 + erf(x / sqrt(2)) or 1 + tanh(...) of the other")


def _gelu_bracket(graph: Graph, name: str, x: str) -> str | None:
    """'none' / 'tanh' when `name` is 1 + erf(x/sqrt2) / 1 + tanh(...x...), else None."""
    node = graph.node(name)
    if not isinstance(node.op, Add):
        return None
    ones = [i for i in node.inputs if scalar(graph, i) == 1.0]
    if len(ones) != 1:
        return None
    inner = graph.node(node.inputs[1] if node.inputs[0] == ones[0] else node.inputs[0])
    if isinstance(inner.op, Erf):
        scale, rest = _scaled(graph, inner.inputs[0])
        return "none" if rest == [x] and close(scale, 1 / math.sqrt(2)) else None
    if isinstance(inner.op, Tanh):
        scale, rest = split_scale(graph, factors(graph, inner.inputs[0]))
        if len(rest) == 1 and close(scale, math.sqrt(2 / math.pi)) and _cubic(graph, rest[0], x):
            return "tanh"
    return None


def _scaled(graph: Graph, name: str) -> tuple[float, list[str]]:
    """`name` as scale * product of the rest: looks through x * c and x / c."""
    node = graph.node(name)
    if isinstance(node.op, Div):
        divisor = scalar(graph, node.inputs[1])
        if divisor:
            scale, rest = _scaled(graph, node.inputs[0])
            return scale / divisor, rest
    return split_scale(graph, factors(graph, name))


def _cubic(graph: Graph, name: str, x: str) -> bool:
    """x + 0.044715 x^3 (either operand order; x^3 as pow(x, 3) or x*x*x)."""
    node = graph.node(name)
    if not isinstance(node.op, Add) or x not in node.inputs:
        return False
    other = node.inputs[1] if node.inputs[0] == x else node.inputs[0]
    scale, rest = split_scale(graph, factors(graph, other))
    if not close(scale, 0.044715):
        return False
    if rest == [x, x, x]:
        return True
    cube = graph.node(rest[0]) if len(rest) == 1 else None
    return cube is not None and cube.op == Pow(3.0) and cube.inputs == (x,)


def _rewrite_gelu(graph: Graph, root: Node, m: Activation) -> None:
    graph.replace_op(root.name, Gelu(m.approximate), [m.x])


def _match_silu(graph: Graph, root: Node) -> Activation | NoMatch:
    for s, x in (root.inputs, root.inputs[::-1]):
        node = graph.node(s)
        if isinstance(node.op, Sigmoid) and node.inputs[0] == x:
            return Activation(x)
    return NoMatch("not x * sigmoid(x)")


def _rewrite_silu(graph: Graph, root: Node, m: Activation) -> None:
    graph.replace_op(root.name, Silu(), [m.x])


GELU = Pattern("gelu", Mul, _match_gelu, _rewrite_gelu)
SILU = Pattern("silu", Mul, _match_silu, _rewrite_silu)


@register_pass
@dataclass(frozen=True)
class ActivationIdioms(PatternPass):
    NAME = "idioms-activation"
    PATTERNS = (GELU, SILU)
