"""idioms-linear: fold bias adds into linear, drop the flatten/unflatten around it.

matmul(x, w) with a constant 2-D w         -> linear(x, w)
add(linear(x, w), b)                       -> linear(x, w, b)   (b constant, [N])
reshape(linear(reshape(x, [M, K])), [..., N]) -> linear(x)      (GPT-2's Conv1D/addmm)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cimc.ir.graph import Graph, Node
from cimc.ir.ops import Add, Constant, Linear, MatMul, Reshape
from cimc.passes.idioms_match import const_array, operand_pairs, single_use
from cimc.passes.manager import register_pass
from cimc.passes.patterns import NoMatch, Pattern, PatternPass


def _match_matmul(graph: Graph, node: Node) -> Node | NoMatch:
    w = const_array(graph, node.inputs[1])
    if w is None or w.ndim != 2:
        return NoMatch("the right operand is not a constant 2-D weight")
    if const_array(graph, node.inputs[0]) is not None:
        return NoMatch("the left operand is a constant (fold-constants' job)")
    if graph.node(node.inputs[0]).type.dtype != graph.node(node.inputs[1]).type.dtype:
        return NoMatch("the operands' dtypes differ")
    return node


def _rewrite_matmul(graph: Graph, node: Node, _: Node) -> None:
    graph.replace_op(node.name, Linear(), list(node.inputs))


@dataclass(frozen=True)
class Bias:
    linear: Node
    bias: str  # the constant operand of the add
    value: np.ndarray


def _match_bias(graph: Graph, add: Node) -> Bias | NoMatch:
    for lin_name, b in operand_pairs(add):
        lin = graph.node(lin_name)
        bias = const_array(graph, b)
        if not isinstance(lin.op, Linear) or len(lin.inputs) != 2 or bias is None:
            continue
        n = lin.type.shape[-1]
        if not single_use(graph, lin_name) or bias.size != n or bias.shape[-1:] != (n,):
            continue
        if add.type != lin.type:
            continue  # the add broadcasts the linear up: not a bias
        return Bias(lin, b, bias)
    return NoMatch("not a bias-less single-use linear plus a constant [N] bias")


def _rewrite_bias(graph: Graph, add: Node, m: Bias) -> None:
    n = m.linear.type.shape[-1]
    b = m.bias
    if m.value.shape != (n,):
        b = graph.add_constant(m.value.reshape(n).astype(np.float32), f"{b}.vec", add.loc)
    operands = [m.linear.inputs[0], m.linear.inputs[1], b]
    graph.replace_op(add.name, Linear(), operands, loc=m.linear.loc)  # the matmul's module


@dataclass(frozen=True)
class Unflatten:
    linear: Node
    flat: Node  # the [M, K] view of x
    x: Node


def _match_unflatten(graph: Graph, outer: Node) -> Unflatten | NoMatch:
    lin = graph.node(outer.inputs[0])
    if not isinstance(lin.op, Linear) or not single_use(graph, lin.name):
        return NoMatch("the operand is not a single-use linear")
    flat = graph.node(lin.inputs[0])
    if not isinstance(flat.op, Reshape) or flat.type.rank != 2:
        return NoMatch("the linear's input is not a reshape to [M, K]")
    x = graph.node(flat.inputs[0])
    if isinstance(x.op, Constant) or outer.type.shape[-1] != lin.type.shape[-1]:
        return NoMatch("a constant input, or the reshape changes the last axis")
    if int(np.prod(outer.type.shape[:-1])) != flat.type.shape[0]:
        return NoMatch("the rows of the [M, K] view are not the leading axes of the result")
    return Unflatten(lin, flat, x)


def _rewrite_unflatten(graph: Graph, outer: Node, m: Unflatten) -> None:
    lead = outer.type.shape[:-1]
    source = m.x.name
    if m.x.type.shape != (*lead, m.flat.type.shape[1]):
        # x is e.g. [B, S, H, D] flattened straight to [B*S, H*D]: reshape it to [B, S, K]
        view = Reshape((*lead, m.flat.type.shape[1]))
        source = graph.add_node(view, [m.x.name], f"{m.flat.name}.rows", m.flat.loc)
    graph.replace_op(outer.name, Linear(), [source, *m.linear.inputs[1:]], loc=m.linear.loc)


MATMUL = Pattern("matmul-to-linear", MatMul, _match_matmul, _rewrite_matmul)
BIAS = Pattern("linear-bias", Add, _match_bias, _rewrite_bias)
UNFLATTEN = Pattern("linear-unflatten", Reshape, _match_unflatten, _rewrite_unflatten)


@register_pass
@dataclass(frozen=True)
class LinearIdioms(PatternPass):
    NAME = "idioms-linear"
    PATTERNS = (MATMUL, BIAS, UNFLATTEN)
