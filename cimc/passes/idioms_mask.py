"""Turn the additive float masks of exported attention back into boolean masks.

Exporters add a float mask to the attention scores, built from a boolean one as
``where(m, 0, -big)``, ``(1 - m) * -big`` or a constant; several may be summed. This
module rebuilds the boolean ``m`` (True = may attend) from such an expression, emitting
new nodes only once the whole expression is known to be a mask, and splits off a
constant causal triangle so that it becomes ``attention(causal=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cimc.ir.graph import Graph, Node
from cimc.ir.op_base import Op
from cimc.ir.ops import Add, Equal, Expand, LogicalAnd, LogicalNot, Mul, Reshape, Sub, Where
from cimc.passes.idioms_match import const_array, operand_pairs, scalar

BLOCKED = -1.0e4  # additive values at or below this block attention (HF uses finfo.min)


@dataclass(frozen=True)
class MaskPlan:
    """A boolean mask to build: a constant, an existing bool value, or an op over plans."""

    kind: str  # "const", "value", "not", "and", "nonzero", "view"
    value: np.ndarray | None = None
    name: str = ""
    parts: tuple[MaskPlan, ...] = ()
    op: Op | None = None  # the view op of kind "view"


def plan_bool_mask(graph: Graph, name: str) -> MaskPlan | None:
    """How to compute the boolean form of additive mask `name`, or None if it is not one."""
    node = graph.node(name)
    value = const_array(graph, name)
    if value is not None:
        return _const_plan(value)
    op = node.op
    if isinstance(op, Where):
        return _where_plan(graph, node.inputs)
    if isinstance(op, Add):
        left, right = (plan_bool_mask(graph, i) for i in node.inputs)
        return MaskPlan("and", parts=(left, right)) if left and right else None
    if isinstance(op, Mul):
        return _scaled_plan(graph, node)
    if isinstance(op, Reshape | Expand):
        inner = plan_bool_mask(graph, node.inputs[0])
        return MaskPlan("view", parts=(inner,), op=op) if inner else None
    return None


def _const_plan(value: np.ndarray) -> MaskPlan | None:
    allowed = value == 0
    if not np.all(allowed | (value <= BLOCKED)):
        return None  # a bias (ALiBi...), not a mask
    return MaskPlan("const", value=allowed)


def _where_plan(graph: Graph, inputs: tuple[str, ...]) -> MaskPlan | None:
    cond, a, b = inputs
    if graph.node(cond).type.dtype.value != "bool":
        return None
    va, vb = scalar(graph, a), scalar(graph, b)
    if va == 0.0 and vb is not None and vb <= BLOCKED:
        return MaskPlan("value", name=cond)
    if vb == 0.0 and va is not None and va <= BLOCKED:
        return MaskPlan("not", parts=(MaskPlan("value", name=cond),))
    return None


def _scaled_plan(graph: Graph, node: Node) -> MaskPlan | None:
    """(1 - m) * -big  ->  m != 0."""
    for inverted, big in operand_pairs(node):
        factor = scalar(graph, big)
        sub = graph.node(inverted)
        if factor is None or factor > BLOCKED or not isinstance(sub.op, Sub):
            continue
        if scalar(graph, sub.inputs[0]) == 1.0:
            return MaskPlan("nonzero", name=sub.inputs[1])
    return None


def build_mask(graph: Graph, plan: MaskPlan, base: str, loc: str) -> str | None:
    """Emit `plan`; None when it is the always-true mask (no masking at all)."""
    if plan.kind == "const":
        assert plan.value is not None
        if plan.value.all():
            return None
        return graph.add_constant(plan.value, f"{base}.mask", loc)
    if plan.kind == "value":
        return plan.name
    if plan.kind == "nonzero":
        x = graph.node(plan.name)
        zero = graph.add_constant(np.zeros((), x.type.dtype.numpy), f"{base}.zero", loc)
        eq = graph.add_node(Equal(), [plan.name, zero], f"{base}.is_pad", loc)
        return graph.add_node(LogicalNot(), [eq], f"{base}.mask", loc)
    parts = [build_mask(graph, p, base, loc) for p in plan.parts]
    if plan.kind == "not":
        assert parts[0] is not None
        return graph.add_node(LogicalNot(), [parts[0]], f"{base}.mask", loc)
    if plan.kind == "view":
        assert plan.op is not None
        return graph.add_node(plan.op, [parts[0]], f"{base}.mask", loc) if parts[0] else None
    present = [p for p in parts if p is not None]
    if len(present) < 2:
        return present[0] if present else None
    return graph.add_node(LogicalAnd(), present, f"{base}.mask", loc)


def split_causal(graph: Graph, mask: str | None, sq: int, sk: int) -> tuple[str | None, bool]:
    """(rest of the mask, causal) when `mask` is, or is and-ed with, the causal triangle."""
    if mask is None:
        return None, False
    if _is_causal(const_array(graph, mask), sq, sk):
        return None, True
    node = graph.node(mask)
    if isinstance(node.op, LogicalAnd):
        for c, rest in operand_pairs(node):
            if _is_causal(const_array(graph, c), sq, sk):
                return rest, True
    return mask, False


def _is_causal(value: np.ndarray | None, sq: int, sk: int) -> bool:
    if value is None or value.dtype != np.bool_ or value.ndim < 2:
        return False
    if value.shape[-2:] != (sq, sk):
        return False
    triangle = np.tril(np.ones((sq, sk), dtype=bool), k=sk - sq)
    return bool(np.all(value == triangle))


def strip_broadcasts(graph: Graph, mask: str | None) -> str | None:
    """Drop and-ing with an all-true constant and trailing expands: attention broadcasts."""
    if mask is None:
        return None
    node = graph.node(mask)
    if isinstance(node.op, Expand):
        return strip_broadcasts(graph, node.inputs[0])
    if isinstance(node.op, LogicalAnd):
        for c, rest in operand_pairs(node):
            value = const_array(graph, c)
            if value is not None and value.all():
                return strip_broadcasts(graph, rest)
    value = const_array(graph, mask)
    if value is not None and value.all():
        return None
    return mask
