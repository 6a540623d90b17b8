"""idioms-norm: decomposed LayerNorm -> layer_norm, decomposed RMSNorm -> rms_norm.

    LayerNorm: d = x - mean(x); y = d / sqrt(mean(d^2) + eps) [* gamma] [+ beta]
    RMSNorm:   y = x * rsqrt(mean(x^2) + eps) * gamma
               (rsqrt spelled rsqrt, reciprocal(sqrt), 1 / sqrt, or x / sqrt)
Both reduce over the last axis with keepdim; gamma/beta must be constants of shape [C].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cimc.ir.graph import Graph, Node
from cimc.ir.ops import (
    Add,
    Div,
    LayerNorm,
    Mul,
    Pow,
    Reciprocal,
    ReduceMean,
    RmsNorm,
    Rsqrt,
    Sqrt,
    Sub,
)
from cimc.passes.idioms_match import const_array, operand_pairs, scalar, single_use
from cimc.passes.manager import GraphPass, register_pass


@register_pass
@dataclass(frozen=True)
class NormIdioms(GraphPass):
    NAME = "idioms-norm"

    def run(self, graph: Graph) -> bool:
        changed = False
        for node in graph.nodes():
            if node.name in graph and isinstance(node.op, ReduceMean):
                changed |= _layer_norm(graph, node) or _rms_norm(graph, node)
        if changed:
            graph.dead_code_elimination()
        return changed


def _last_axis_mean(graph: Graph, node: Node) -> bool:
    rank = graph.node(node.inputs[0]).type.rank
    op = node.op
    return isinstance(op, ReduceMean) and op.axes == (rank - 1,) and op.keepdim


def _squared(graph: Graph, name: str) -> str | None:
    """x when `name` is x^2 or x*x."""
    node = graph.node(name)
    if isinstance(node.op, Pow) and node.op.exponent == 2.0:
        return node.inputs[0]
    if isinstance(node.op, Mul) and node.inputs[0] == node.inputs[1]:
        return node.inputs[0]
    return None


def _plus_eps(graph: Graph, name: str) -> tuple[str, float] | None:
    """(users of mean + eps, eps) for the single add of a scalar constant to `name`."""
    users = graph.users(name)
    if len(users) != 1 or not isinstance(graph.node(users[0]).op, Add):
        return None
    add = graph.node(users[0])
    for a, c in operand_pairs(add):
        eps = scalar(graph, c)
        if a == name and eps is not None:
            return add.name, eps
    return None


def _normalized(graph: Graph, x: str, var_eps: str) -> str | None:
    """The node computing x / sqrt(var_eps) in one of its spellings."""
    for user in graph.users(var_eps):
        node = graph.node(user)
        if isinstance(node.op, Rsqrt):
            return _times(graph, x, user)
        if isinstance(node.op, Sqrt):
            for inv in graph.users(user):
                inv_node = graph.node(inv)
                if isinstance(inv_node.op, Div) and inv_node.inputs == (x, user):
                    return inv
                if isinstance(inv_node.op, Reciprocal) or (
                    isinstance(inv_node.op, Div) and scalar(graph, inv_node.inputs[0]) == 1.0
                ):
                    return _times(graph, x, inv)
    return None


def _times(graph: Graph, x: str, factor: str) -> str | None:
    for user in graph.users(factor):
        node = graph.node(user)
        if isinstance(node.op, Mul) and sorted(node.inputs) == sorted((x, factor)):
            return user
    return None


def _affine(graph: Graph, name: str, op: type, channels: int) -> tuple[str, str] | None:
    """(result, [C] constant) when the only user of `name` is `op` with a constant."""
    if not single_use(graph, name):
        return None
    user = graph.node(graph.users(name)[0])
    if not isinstance(user.op, op):
        return None
    for a, c in operand_pairs(user):
        value = const_array(graph, c)
        if a != name or value is None or value.size != channels:
            continue
        if value.ndim >= 1 and value.shape[-1] == channels:
            return user.name, _vector(graph, c, value, channels)
    return None


def _vector(graph: Graph, name: str, value: np.ndarray, channels: int) -> str:
    """The constant `name` itself when it is already [C] f32, else a reshaped copy."""
    if value.shape == (channels,) and value.dtype == np.float32:
        return name
    flat = value.reshape(channels).astype(np.float32)
    return graph.add_constant(flat, f"{name}.vec", graph.node(name).loc)


def _layer_norm(graph: Graph, mean: Node) -> bool:
    x = mean.inputs[0]
    if not _last_axis_mean(graph, mean):
        return False
    centered = [
        u
        for u in graph.users(mean.name)
        if graph.node(u).op == Sub() and graph.node(u).inputs == (x, mean.name)
    ]
    if len(centered) != 1:
        return False
    d = centered[0]
    var = next((u for u in graph.users(d) if _squared(graph, u) == d), None)
    var_mean = graph.users(var)[0] if var is not None and single_use(graph, var) else None
    if var_mean is None or not isinstance(graph.node(var_mean).op, ReduceMean):
        return False
    if not _last_axis_mean(graph, graph.node(var_mean)):
        return False
    plus = _plus_eps(graph, var_mean)
    normalized = _normalized(graph, d, plus[0]) if plus else None
    if plus is None or normalized is None:
        return False
    channels = graph.node(x).type.shape[-1]
    return _replace(graph, normalized, x, channels, plus[1], with_beta=True)


def _rms_norm(graph: Graph, mean: Node) -> bool:
    if not _last_axis_mean(graph, mean):
        return False
    x = _squared(graph, mean.inputs[0])
    plus = _plus_eps(graph, mean.name)
    normalized = _normalized(graph, x, plus[0]) if plus and x else None
    if x is None or plus is None or normalized is None:
        return False
    channels = graph.node(x).type.shape[-1]
    return _replace(graph, normalized, x, channels, plus[1], with_beta=False)


def _replace(
    graph: Graph, normalized: str, x: str, channels: int, eps: float, with_beta: bool
) -> bool:
    loc = graph.node(normalized).loc
    scaled = _affine(graph, normalized, Mul, channels)
    if scaled is not None:
        result, gamma = scaled
    else:
        result = normalized
        gamma = graph.add_constant(np.ones(channels, np.float32), f"{result}.gamma", loc)
    if not with_beta:
        graph.replace_op(result, RmsNorm(eps), [x, gamma])
        return True
    shifted = _affine(graph, result, Add, channels)
    if shifted is not None:
        result, beta = shifted
    else:
        beta = graph.add_constant(np.zeros(channels, np.float32), f"{result}.beta", loc)
    graph.replace_op(result, LayerNorm(eps), [x, gamma, beta])
    return True
