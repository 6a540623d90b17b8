"""The graph the torch importer builds, with the queries its aten handlers ask.

Handlers build every op through `Builder.emit`, named after the fx node being translated
and located at its source line (`loc`); the graph is the plain translation, its idioms
are recognized afterwards by the `idioms` pass. Small constants with equal contents are
shared as they are created (the same one node for every `1.0` of a model).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cimc.ir import Graph, Node, TensorType
from cimc.ir.op_base import Op
from cimc.ir.ops import Constant

SMALL_CONSTANT = 4096  # elements; equal small constants are shared (deterministic CSE)


class Builder:
    """Wraps a Graph; names and locations come from the fx node being translated."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.loc = ""
        self._small: dict[tuple[str, tuple[int, ...], bytes], str] = {}

    # ---- queries ----------------------------------------------------------------------

    def node(self, name: str) -> Node:
        return self.graph.node(name)

    def type_of(self, name: str) -> TensorType:
        return self.graph.node(name).type

    def shape(self, name: str) -> tuple[int, ...]:
        return self.graph.node(name).type.shape

    def const(self, name: str) -> np.ndarray | None:
        """The value of a constant node, None for a run-time value."""
        op = self.graph.node(name).op
        return op.value if isinstance(op, Constant) else None

    def is_scalar(self, name: str, value: float) -> bool:
        """Whether `name` is a constant whose every element equals `value`."""
        array = self.const(name)
        return array is not None and array.size > 0 and bool(np.all(array == value))

    # ---- building ---------------------------------------------------------------------

    def emit(self, op: Op, inputs: Sequence[str], name: str) -> str:
        """Add `op` applied to `inputs`; returns the new node's (uniquified) name."""
        return self.graph.add_node(op, tuple(inputs), name=name, loc=self.loc)

    def constant(self, value: np.ndarray, name: str, share: bool = True) -> str:
        """A constant node; small anonymous constants with equal contents are shared
        (`share=False` for model parameters, which keep their own names)."""
        value = np.asarray(value)
        if value.size > SMALL_CONSTANT or not share:
            return self.graph.add_constant(value, name=name, loc=self.loc)
        key = (value.dtype.name, value.shape, np.ascontiguousarray(value).tobytes())
        if key not in self._small:
            self._small[key] = self.graph.add_constant(value, name=name, loc=self.loc)
        return self._small[key]
