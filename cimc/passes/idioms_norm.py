"""idioms-norm: decomposed LayerNorm -> layer_norm, decomposed RMSNorm -> rms_norm.

    LayerNorm: d = x - mean(x); y = d / sqrt(mean(d^2) + eps) [* gamma] [+ beta]
    RMSNorm:   y = x * rsqrt(mean(x^2) + eps) [* gamma]
               (rsqrt spelled rsqrt, reciprocal(sqrt), 1 / sqrt, or x / sqrt; x^2 as x * x)
Both reduce over the last axis with keepdim and are matched at their first mean; gamma and
beta must be constants holding [C] values (any leading unit axes), either operand order.
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
from cimc.passes.manager import register_pass
from cimc.passes.patterns import NoMatch, Pattern, PatternPass


@dataclass(frozen=True)
class Affine:
    """`result` = the normalized value times (gamma) or plus (beta) the constant `param`."""

    result: str
    param: str


@dataclass(frozen=True)
class Norm:
    x: str
    normalized: str  # the node computing (x - mean) / sqrt(...) or x * rsqrt(...)
    eps: float
    gamma: Affine | None
    beta: Affine | None  # always None for RMSNorm


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
    """(mean + eps, eps) for the single add of a scalar constant to `name`."""
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


def _affine(graph: Graph, name: str, op: type, channels: int) -> Affine | None:
    """The single user of `name` when it is `op` with a constant holding [C] values."""
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
            return Affine(user.name, c)
    return None


def _match_layer_norm(graph: Graph, mean: Node) -> Norm | NoMatch:
    x = mean.inputs[0]
    if not _last_axis_mean(graph, mean):
        return NoMatch("not a mean over the last axis with keepdim")
    centered = [
        u
        for u in graph.users(mean.name)
        if graph.node(u).op == Sub() and graph.node(u).inputs == (x, mean.name)
    ]
    if len(centered) != 1:
        return NoMatch("no single x - mean(x)")
    d = centered[0]
    var = next((u for u in graph.users(d) if _squared(graph, u) == d), None)
    var_mean = graph.users(var)[0] if var is not None and single_use(graph, var) else None
    if var_mean is None or not _last_axis_mean(graph, graph.node(var_mean)):
        return NoMatch("the centered value's square is not averaged over the last axis")
    plus = _plus_eps(graph, var_mean)
    normalized = _normalized(graph, d, plus[0]) if plus else None
    if plus is None or normalized is None:
        return NoMatch("the variance is not divided out as 1 / sqrt(var + eps)")
    channels = graph.node(x).type.shape[-1]
    gamma = _affine(graph, normalized, Mul, channels)
    beta = _affine(graph, gamma.result if gamma else normalized, Add, channels)
    return Norm(x, normalized, plus[1], gamma, beta)


def _match_rms_norm(graph: Graph, mean: Node) -> Norm | NoMatch:
    if not _last_axis_mean(graph, mean):
        return NoMatch("not a mean over the last axis with keepdim")
    x = _squared(graph, mean.inputs[0])
    if x is None:
        return NoMatch("the mean is not of a square")
    plus = _plus_eps(graph, mean.name)
    normalized = _normalized(graph, x, plus[0]) if plus else None
    if plus is None or normalized is None:
        return NoMatch("x is not divided by sqrt(mean(x^2) + eps)")
    channels = graph.node(x).type.shape[-1]
    return Norm(x, normalized, plus[1], _affine(graph, normalized, Mul, channels), None)


def _rewrite_layer_norm(graph: Graph, mean: Node, m: Norm) -> None:
    gamma, result = _param(graph, m, m.gamma, 1.0, "gamma")
    beta, result = _param(graph, m, m.beta, 0.0, "beta", result)
    graph.replace_op(result, LayerNorm(m.eps), [m.x, gamma, beta])


def _rewrite_rms_norm(graph: Graph, mean: Node, m: Norm) -> None:
    gamma, result = _param(graph, m, m.gamma, 1.0, "gamma")
    graph.replace_op(result, RmsNorm(m.eps), [m.x, gamma])


def _param(
    graph: Graph, m: Norm, found: Affine | None, fill: float, what: str, result: str = ""
) -> tuple[str, str]:
    """(the [C] f32 parameter, the node the norm replaces) for gamma or beta; a missing one
    is a constant `fill` named after the node the norm replaces so far."""
    result = result or m.normalized
    channels = graph.node(m.x).type.shape[-1]
    if found is None:
        ones = np.full(channels, fill, np.float32)
        return graph.add_constant(ones, f"{result}.{what}", graph.node(m.normalized).loc), result
    value = const_array(graph, found.param)
    assert value is not None
    if value.shape == (channels,) and value.dtype == np.float32:
        return found.param, found.result
    flat = value.reshape(channels).astype(np.float32)
    vector = graph.add_constant(flat, f"{found.param}.vec", graph.node(found.param).loc)
    return vector, found.result


LAYER_NORM = Pattern("layer-norm", ReduceMean, _match_layer_norm, _rewrite_layer_norm)
RMS_NORM = Pattern("rms-norm", ReduceMean, _match_rms_norm, _rewrite_rms_norm)


@register_pass
@dataclass(frozen=True)
class NormIdioms(PatternPass):
    NAME = "idioms-norm"
    PATTERNS = (LAYER_NORM, RMS_NORM)
