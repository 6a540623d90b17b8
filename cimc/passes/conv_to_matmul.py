"""conv-to-matmul: convolutions and pooling as im2col plus ops with integer recipes.

conv(x, w, b)  ->  im2col(x) [B, K, L] -> transpose [B, L, K] -> linear(s) -> [B, L, Cout]
                   -> transpose [B, Cout, L] -> reshape [B, Cout, *O]
pool(x)        ->  reshape [B*C, 1, *S] -> im2col [B*C, k, L] -> transpose [B*C, L, k]
                   -> reduce_max / reduce_mean (or reduce_sum * 1/count) -> reshape [B, C, *O]

Why: the weight of a conv is a K = Cin/groups * prod(kernel) by Cout matrix, so once the
windows are columns the conv is a linear layer and runs weight-stationary on the macros
like any other (tiling, streaming, per-channel quantization, inspect all apply). A 1x1
conv of stride 1 needs no im2col (a reshape). Grouped convs (depthwise included) become
one linear per block of `block`-bounded groups with a block-diagonal weight: the zeros
cost macro cells, but one MVM then serves every group of the block at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cimc.ir.graph import Graph, Node
from cimc.ir.op_base import Op
from cimc.ir.ops import (
    Concat,
    Conv,
    Im2col,
    Linear,
    Mul,
    Pool,
    ReduceMax,
    ReduceMean,
    ReduceSum,
    Reshape,
    Slice,
    Transpose,
)
from cimc.ir.ops_conv import Window
from cimc.passes.idioms_match import const_array
from cimc.passes.manager import GraphPass, register_pass

ROWS_LAST = (0, 2, 1)

REWRITTEN_INTO: dict[type[Op], tuple[type[Op], ...]] = {
    Conv: (Im2col, Transpose, Slice, Linear, Concat, Reshape),
    Pool: (Im2col, Transpose, ReduceMax, ReduceMean, ReduceSum, Mul, Reshape),
}
"""The ops this pass rewrites, and every op their rewrites may use (the docs' table)."""


@register_pass
@dataclass(frozen=True)
class ConvToMatmul(GraphPass):
    """rewrite conv and pool into im2col, linear layers and reductions."""

    NAME = "conv-to-matmul"
    block: int = 128  # a grouped conv's linear spans at most this many rows and columns

    def run(self, graph: Graph) -> bool:
        changed = False
        for node in graph.nodes():
            if isinstance(node.op, Conv):
                _conv(graph, node, self.block)
                changed = True
            elif isinstance(node.op, Pool):
                _pool(graph, node)
                changed = True
        if changed:
            graph.dead_code_elimination()
        return changed


def _columns(graph: Graph, node: Node, x: str, win: Window, pad_value: float) -> str:
    """The windows of x as rows: [B, L, C * prod(kernel)]."""
    simple = all(k == 1 for k in win.kernel) and all(s == 1 for s in win.strides)
    if simple and not any(win.pads):  # a 1x1 conv reads x itself
        t = graph.node(x).type
        cols = graph.add_node(
            Reshape((t.shape[0], t.shape[1], math.prod(t.shape[2:]))), [x], f"{node.name}.flat"
        )
    else:
        op = Im2col(win.kernel, win.strides, win.pads, win.dilations, pad_value)
        cols = graph.add_node(op, [x], f"{node.name}.im2col", node.loc)
    return graph.add_node(Transpose(ROWS_LAST), [cols], f"{node.name}.rows", node.loc)


def _conv(graph: Graph, node: Node, block: int) -> None:
    assert isinstance(node.op, Conv)
    w = const_array(graph, node.inputs[1])
    assert w is not None  # a constant operand (checked by the graph)
    b = const_array(graph, node.inputs[2]) if len(node.inputs) == 3 else None
    cout, groups = w.shape[0], node.op.groups
    rows = _columns(graph, node, node.inputs[0], node.op.window(w.shape[2:]), 0.0)
    k_g, n_g = w[0].size, cout // groups
    per = max(1, min(block // k_g, block // n_g)) if groups > 1 else groups
    parts = []
    for g0 in range(0, groups, per):
        g1 = min(groups, g0 + per)
        x = rows
        if (g0, g1) != (0, groups):
            x = graph.add_node(Slice(2, g0 * k_g, g1 * k_g), [rows], f"{node.name}.g{g0}", node.loc)
        weight = _block_diagonal(w[g0 * n_g : g1 * n_g].reshape(g1 - g0, n_g, k_g))
        operands = [x, graph.add_constant(weight, f"{node.name}.w{g0}", node.loc)]
        if b is not None:
            bias = np.ascontiguousarray(b[g0 * n_g : g1 * n_g], np.float32)
            operands.append(graph.add_constant(bias, f"{node.name}.b{g0}", node.loc))
        parts.append(graph.add_node(Linear(), operands, f"{node.name}.mm{g0}", node.loc))
    out = parts[0] if len(parts) == 1 else graph.add_node(Concat(2), parts, f"{node.name}.cat")
    _to_channels_first(graph, node, out)


def _block_diagonal(w: np.ndarray) -> np.ndarray:
    """[G, N, K] per-group weights -> the [G*K, G*N] linear weight (zeros off the blocks)."""
    g, n, k = w.shape
    out = np.zeros((g * k, g * n), np.float32)
    for i in range(g):
        out[i * k : (i + 1) * k, i * n : (i + 1) * n] = w[i].T
    return out


def _to_channels_first(graph: Graph, node: Node, rows: str) -> None:
    """[B, L, C] rows -> the node's [B, C, *O] result, under the node's own name."""
    t = graph.add_node(Transpose(ROWS_LAST), [rows], f"{node.name}.cols", node.loc)
    graph.replace_op(node.name, Reshape(node.type.shape), [t])


def _pool(graph: Graph, node: Node) -> None:
    assert isinstance(node.op, Pool)
    x, op = graph.node(node.inputs[0]), node.op
    b, c, *spatial = x.type.shape
    win = op.window
    if _global(win, tuple(spatial)):
        axes = tuple(range(2, x.type.rank))
        reduce = ReduceMax(axes, True) if op.kind == "max" else ReduceMean(axes, True)
        graph.replace_op(node.name, reduce, [x.name])
        return
    flat = graph.add_node(Reshape((b * c, 1, *spatial)), [x.name], f"{node.name}.planes")
    pad_value = -math.inf if op.kind == "max" else 0.0
    rows = _columns(graph, node, flat, win, pad_value)
    if op.kind == "max":
        out = graph.add_node(ReduceMax((2,)), [rows], f"{node.name}.max", node.loc)
    elif op.count_include_pad or not any(win.pads):
        out = graph.add_node(ReduceMean((2,)), [rows], f"{node.name}.mean", node.loc)
    else:
        total = graph.add_node(ReduceSum((2,)), [rows], f"{node.name}.sum", node.loc)
        inv = graph.add_constant(_inverse_counts(win, tuple(spatial)), f"{node.name}.inv")
        out = graph.add_node(Mul(), [total, inv], f"{node.name}.avg", node.loc)
    graph.replace_op(node.name, Reshape(node.type.shape), [out])


def _global(win: Window, spatial: tuple[int, ...]) -> bool:
    """One window covering the whole unpadded input: a plain reduction."""
    return win.kernel == spatial and not any(win.pads) and all(d == 1 for d in win.dilations)


def _inverse_counts(win: Window, spatial: tuple[int, ...]) -> np.ndarray:
    """1 / (input elements under each window), [L] in output order."""
    per_axis = []
    for a, size in enumerate(spatial):
        starts = np.arange(win.out_shape(spatial)[a]) * win.strides[a] - win.begin(a)
        taps = starts[:, None] + np.arange(win.kernel[a])[None, :] * win.dilations[a]
        per_axis.append(((taps >= 0) & (taps < size)).sum(axis=1))
    counts = per_axis[0]
    for more in per_axis[1:]:
        counts = np.multiply.outer(counts, more)
    return (1.0 / counts.reshape(-1)).astype(np.float32)
