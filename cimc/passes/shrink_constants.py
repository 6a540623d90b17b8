"""shrink-constants: a constant that repeats along an axis of an elementwise operation keeps
one slice, which the operation broadcasts back.

Why: exporters materialise broadcasts. BERT's torch.export graph adds a [1, S, H] constant,
the token-type embedding of the all-zero token types, whose S rows are equal; stored whole
it is S times the bytes to keep in the constants file and to load from DRAM on every
inference (BERT-base at seq 128: 128 x 768 int16, 192 KiB, instead of 1.5 KiB).

Rule (keeps every value bit for bit): for an operand of `add`, `sub`, `mul` or `div` that
is a constant whose slices along an axis of length > 1 are all equal, the operand becomes
that constant's first slice along every such axis, when the other operand still gives the
result its shape. A constant with other users keeps its full form for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cimc.ir.graph import Graph, Node
from cimc.ir.ops import Add, Div, Mul, Sub
from cimc.passes.manager import GraphPass, register_pass

_ELEMENTWISE = (Add, Sub, Mul, Div)


@register_pass
@dataclass(frozen=True)
class ShrinkConstants(GraphPass):
    NAME = "shrink-constants"

    def run(self, graph: Graph) -> bool:
        changed = False
        shrunk: dict[tuple[str, tuple[int, ...]], str] = {}  # (constant, shape) -> node
        for node in graph.nodes():
            if not isinstance(node.op, _ELEMENTWISE):
                continue
            inputs = list(node.inputs)
            for k, name in enumerate(inputs):
                small = _shrunk_value(graph, node, k)
                if small is None:
                    continue
                key = (name, small.shape)
                if key not in shrunk:
                    loc = graph.node(name).loc
                    shrunk[key] = graph.add_constant(small, name=f"{name}_slice", loc=loc)
                inputs[k] = shrunk[key]
            if tuple(inputs) != node.inputs:
                graph.set_inputs(node.name, inputs)
                changed = True
        return changed


def _shrunk_value(graph: Graph, node: Node, k: int) -> np.ndarray | None:
    """Operand k's value cut to one slice along each repeating axis, or None."""
    value = graph.constant_value(node.inputs[k])
    if value is None or value.ndim == 0:
        return None
    small = value
    for axis in range(value.ndim):
        if small.shape[axis] > 1 and bool(np.all(small == small.take([0], axis=axis))):
            small = small.take([0], axis=axis)
    if small.shape == value.shape:
        return None
    shapes = [t.shape for i, t in enumerate(graph.input_types(node)) if i != k]
    if np.broadcast_shapes(small.shape, *shapes) != tuple(node.type.shape):
        return None  # the other operand does not span the axis: the result would shrink
    return np.ascontiguousarray(small)
