"""A graph builder that canonicalizes on construction.

Every op the aten translators create goes through `Builder.emit`, which first offers it to
the rewrite rules registered for its op name. A rule looks back at the already built
operands and answers with a better spelling (another op, or an existing value when the op
is a no-op). Patterns are thus recognized when their last op is built; the ops they
replace become dead and `finish` removes them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cimc.errors import CimcError
from cimc.ir import Graph, Node, TensorType
from cimc.ir.graph import node_location
from cimc.ir.op_base import Op, OpTypeError
from cimc.ir.ops import Constant

SMALL_CONSTANT = 4096  # elements; equal small constants are shared (deterministic CSE)


@dataclass(frozen=True)
class Rewrite:
    """A rule's answer: build `op` on `inputs` instead of the op offered."""

    op: Op
    inputs: tuple[str, ...]


RuleResult = Rewrite | str | None  # str = reuse that existing value
Rule = Callable[["Builder", Op, tuple[str, ...]], RuleResult]


class Builder:
    """Wraps a Graph; names and locations come from the fx node being translated."""

    def __init__(self, graph: Graph, rules: dict[str, list[Rule]]) -> None:
        self.graph = graph
        self.rules = rules
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

    def is_op(self, name: str, op_type: type[Op]) -> bool:
        return isinstance(self.graph.node(name).op, op_type)

    def is_scalar(self, name: str, value: float) -> bool:
        """Whether `name` is a constant whose every element equals `value`."""
        array = self.const(name)
        return array is not None and array.size > 0 and bool(np.all(array == value))

    # ---- building ---------------------------------------------------------------------

    def emit(self, op: Op, inputs: Sequence[str], name: str) -> str:
        """Add `op` (or what the rules turn it into); returns the value's name."""
        operands = tuple(inputs)
        for _ in range(32):  # rules rewrite into simpler ops; the bound is a safety net
            op = self._normalize(op, operands, name)
            result = self._apply_rules(op, operands)
            if result is None:
                break
            if isinstance(result, str):
                return result
            op, operands = result.op, result.inputs
        if isinstance(op, Constant):
            return self.constant(op.value, name)
        return self.graph.add_node(op, operands, name=name, loc=self.loc)

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

    def _normalize(self, op: Op, inputs: tuple[str, ...], name: str) -> Op:
        """The op's normal form for its operands (rules compare resolved shapes)."""
        try:
            return op.normalize(tuple(self.type_of(i) for i in inputs))
        except OpTypeError as e:
            raise CimcError(str(e), node_location(name, self.loc)) from None

    def _apply_rules(self, op: Op, inputs: tuple[str, ...]) -> RuleResult:
        for rule in self.rules.get(op.NAME, ()):
            result = rule(self, op, inputs)
            if result is not None:
                return result
        return None


def register(table: dict[str, list[Rule]], *op_names: str) -> Callable[[Rule], Rule]:
    """Decorator adding a rule for the given op names to `table`."""

    def add(rule: Rule) -> Rule:
        for name in op_names:
            table.setdefault(name, []).append(rule)
        return rule

    return add
