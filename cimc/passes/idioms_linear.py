"""idioms-linear: fold bias adds into linear, drop the flatten/unflatten around it.

add(linear(x, w), b)                       -> linear(x, w, b)   (b constant, [N])
matmul(x, w) with a constant 2-D w         -> linear(x, w)
reshape(linear(reshape(x, [M, K])), [..., N]) -> linear(x)      (GPT-2's Conv1D/addmm)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cimc.ir.graph import Graph, Node
from cimc.ir.ops import Add, Constant, Linear, MatMul, Reshape
from cimc.passes.idioms_match import const_array, operand_pairs, single_use
from cimc.passes.manager import GraphPass, register_pass


@register_pass
@dataclass(frozen=True)
class LinearIdioms(GraphPass):
    NAME = "idioms-linear"

    def run(self, graph: Graph) -> bool:
        changed = False
        for node in graph.nodes():
            if node.name not in graph:
                continue
            if isinstance(node.op, MatMul):
                changed |= _matmul_to_linear(graph, node)
            elif isinstance(node.op, Add):
                changed |= _fold_bias(graph, node)
            elif isinstance(node.op, Reshape):
                changed |= _unflatten(graph, node)
        if changed:
            graph.dead_code_elimination()
        return changed


def _matmul_to_linear(graph: Graph, node: Node) -> bool:
    w = const_array(graph, node.inputs[1])
    if w is None or w.ndim != 2 or const_array(graph, node.inputs[0]) is not None:
        return False
    if graph.node(node.inputs[0]).type.dtype != graph.node(node.inputs[1]).type.dtype:
        return False
    graph.replace_op(node.name, Linear(), list(node.inputs))
    return True


def _fold_bias(graph: Graph, add: Node) -> bool:
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
        if bias.shape != (n,):
            b = graph.add_constant(bias.reshape(n).astype(np.float32), f"{b}.vec", add.loc)
        graph.replace_op(add.name, Linear(), [lin.inputs[0], lin.inputs[1], b])
        return True
    return False


def _unflatten(graph: Graph, outer: Node) -> bool:
    lin = graph.node(outer.inputs[0])
    if not isinstance(lin.op, Linear) or not single_use(graph, lin.name):
        return False
    flat = graph.node(lin.inputs[0])
    if not isinstance(flat.op, Reshape) or flat.type.rank != 2:
        return False
    x = graph.node(flat.inputs[0])
    lead = outer.type.shape[:-1]
    if isinstance(x.op, Constant) or outer.type.shape[-1] != lin.type.shape[-1]:
        return False
    if int(np.prod(lead)) != flat.type.shape[0]:
        return False
    source = x.name
    if x.type.shape != (*lead, flat.type.shape[1]):
        # x is e.g. [B, S, H, D] flattened straight to [B*S, H*D]: reshape it to [B, S, K]
        view = Reshape((*lead, flat.type.shape[1]))
        source = graph.add_node(view, [x.name], f"{flat.name}.rows", flat.loc)
    graph.replace_op(outer.name, Linear(), [source, *lin.inputs[1:]])
    return True
