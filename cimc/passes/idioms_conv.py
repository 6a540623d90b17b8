"""idioms-conv: fold per-channel scales and shifts (inference BatchNorm) into convs.

mul(conv(x, w, b), s)   -> conv(x, w * s, b * s)   (s constant, one value per out channel)
add(conv(x, w, b), t)   -> conv(x, w, b + t)       (t likewise; also t + conv)
sub(conv(x, w, b), t)   -> conv(x, w, b - t)

The importers spell an inference BatchNormalization as x * s + t with
s = gamma / sqrt(var + eps), t = beta - mean * s, so BN after a conv folds away here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cimc.ir.graph import Graph, Node
from cimc.ir.ops import Add, Conv, Mul, Sub
from cimc.passes.idioms_match import const_array, operand_pairs, single_use
from cimc.passes.manager import register_pass
from cimc.passes.patterns import NoMatch, Pattern, PatternPass


@dataclass(frozen=True)
class Affine:
    conv: Node
    per_channel: np.ndarray  # float32 [Cout]


def per_channel(value: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray | None:
    """`value` as one float32 per channel (axis 1 of `out_shape`) if it broadcasts so."""
    if value.ndim > len(out_shape):
        return None
    shape = (1,) * (len(out_shape) - value.ndim) + value.shape
    channels = out_shape[1]
    if any(d != 1 for k, d in enumerate(shape) if k != 1) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(value.reshape(-1), (channels,)).astype(np.float32)


def _match(graph: Graph, node: Node, commutes: bool) -> Affine | NoMatch:
    pairs = list(operand_pairs(node)) if commutes else [tuple(node.inputs)]
    for conv_name, other in pairs:
        conv, value = graph.node(conv_name), const_array(graph, other)
        if not isinstance(conv.op, Conv) or value is None or not single_use(graph, conv_name):
            continue
        vector = per_channel(value, conv.type.shape)
        if vector is not None and node.type == conv.type:
            return Affine(conv, vector)
    return NoMatch("not a single-use conv and a constant with one value per output channel")


def _parts(graph: Graph, conv: Node) -> tuple[np.ndarray, np.ndarray]:
    w = const_array(graph, conv.inputs[1])
    assert w is not None
    b = const_array(graph, conv.inputs[2]) if len(conv.inputs) == 3 else None
    bias = np.zeros(w.shape[0], np.float32) if b is None else b.astype(np.float32)
    return w.astype(np.float32), bias


def _replace(graph: Graph, node: Node, conv: Node, w: np.ndarray, b: np.ndarray) -> None:
    wn = graph.add_constant(np.ascontiguousarray(w, np.float32), f"{conv.name}.w", node.loc)
    bn = graph.add_constant(np.ascontiguousarray(b, np.float32), f"{conv.name}.b", node.loc)
    graph.replace_op(node.name, conv.op, [conv.inputs[0], wn, bn])


def _rewrite_scale(graph: Graph, node: Node, m: Affine) -> None:
    w, b = _parts(graph, m.conv)
    s = m.per_channel
    _replace(graph, node, m.conv, w * s.reshape((-1,) + (1,) * (w.ndim - 1)), b * s)


def _rewrite_shift(graph: Graph, node: Node, m: Affine) -> None:
    w, b = _parts(graph, m.conv)
    sign = np.float32(-1.0 if isinstance(node.op, Sub) else 1.0)
    _replace(graph, node, m.conv, w, b + sign * m.per_channel)


SCALE = Pattern("conv-scale", Mul, lambda g, n: _match(g, n, True), _rewrite_scale)
SHIFT = Pattern("conv-shift", Add, lambda g, n: _match(g, n, True), _rewrite_shift)
SUB_SHIFT = Pattern("conv-sub-shift", Sub, lambda g, n: _match(g, n, False), _rewrite_shift)


@register_pass
@dataclass(frozen=True)
class ConvIdioms(PatternPass):
    NAME = "idioms-conv"
    PATTERNS = (SCALE, SHIFT, SUB_SHIFT)
