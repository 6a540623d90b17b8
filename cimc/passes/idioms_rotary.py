"""idioms-rotary: HF rotary embedding -> rotary(x, cos, sin).

x * cos + cat(-x[..., D/2:], x[..., :D/2]) * sin      (operands in any order)
x + cat(-x[..., D/2:], x[..., :D/2]) * sin            (cos = 1: position 0 alone)

cos and sin are any values broadcasting into x. A constant table that only rotary nodes
use loses the leading axes it does not vary along (HF's [1, 1, S, D] becomes [S, D]).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cimc.ir.graph import Graph, Node
from cimc.ir.ops import Add, Concat, Constant, Mul, Neg, Rotary, Slice
from cimc.passes.idioms_match import broadcasts_into, const_array, operand_pairs, producer
from cimc.passes.manager import register_pass
from cimc.passes.patterns import NoMatch, Pattern, PatternPass


@dataclass(frozen=True)
class Table:
    name: str  # a constant cos or sin table
    value: np.ndarray  # its squeezed value


@dataclass(frozen=True)
class RotaryMatch:
    x: str
    cos: str
    sin: str


def _rotate_half_of(graph: Graph, name: str) -> str | None:
    """x when `name` is cat(-x[..., D/2:], x[..., :D/2]) on the last axis."""
    cat = producer(graph, name, Concat)
    if cat is None or len(cat.inputs) != 2 or not isinstance(cat.op, Concat):
        return None
    if cat.op.axis != cat.type.rank - 1:
        return None
    neg = producer(graph, cat.inputs[0], Neg)
    second = producer(graph, neg.inputs[0], Slice) if neg else None
    first = producer(graph, cat.inputs[1], Slice)
    if second is None or first is None or first.inputs != second.inputs:
        return None
    assert isinstance(first.op, Slice) and isinstance(second.op, Slice)
    d = graph.node(first.inputs[0]).type.shape[-1]
    last = cat.type.rank - 1
    halves = (
        (first.op.axis, first.op.start, first.op.stop),
        (second.op.axis, second.op.start, second.op.stop),
    )
    if (
        halves != ((last, 0, d // 2), (last, d // 2, d))
        or first.op.step != 1
        or second.op.step != 1
    ):
        return None
    return first.inputs[0]


def _match(graph: Graph, add: Node) -> RotaryMatch | NoMatch:
    for a, b in operand_pairs(add):
        direct, rotated = producer(graph, a, Mul), producer(graph, b, Mul)
        if direct is None or rotated is None:
            continue
        for rot, sin in operand_pairs(rotated):
            x = _rotate_half_of(graph, rot)
            if x is None:
                continue
            for x2, cos in operand_pairs(direct):
                shape = graph.node(x).type.shape
                trig_ok = all(broadcasts_into(graph.node(t).type.shape, shape) for t in (cos, sin))
                if x2 == x and trig_ok and add.type.shape == shape:
                    return RotaryMatch(x, cos, sin)
    return NoMatch("not x * cos + rotate_half(x) * sin with cos, sin broadcasting into x")


def _rewrite(graph: Graph, add: Node, m: RotaryMatch) -> None:
    graph.replace_op(add.name, Rotary(), [m.x, m.cos, m.sin])


def _match_unit_cos(graph: Graph, add: Node) -> RotaryMatch | NoMatch:
    """x + rotate_half(x) * sin: a rotary whose cos is all ones (position 0 alone), which
    simplify has already turned from x * cos into x."""
    for x, b in operand_pairs(add):
        rotated = producer(graph, b, Mul)
        if rotated is None:
            continue
        for rot, sin in operand_pairs(rotated):
            shape = graph.node(x).type.shape
            fits = broadcasts_into(graph.node(sin).type.shape, shape)
            if _rotate_half_of(graph, rot) == x and fits and add.type.shape == shape:
                return RotaryMatch(x, "", sin)
    return NoMatch("not x + rotate_half(x) * sin with sin broadcasting into x")


def _rewrite_unit_cos(graph: Graph, add: Node, m: RotaryMatch) -> None:
    ones = np.ones(graph.node(m.sin).type.shape, np.float32)
    cos = graph.add_constant(ones, f"{add.name}.cos", add.loc)
    graph.replace_op(add.name, Rotary(), [m.x, cos, m.sin])


def _match_table(graph: Graph, rotary: Node) -> Table | NoMatch:
    for name in rotary.inputs[1:]:
        value = const_array(graph, name)
        if value is None or graph.is_output(name):
            continue
        users = [graph.node(u) for u in graph.users(name)]
        if any(not isinstance(u.op, Rotary) or u.inputs[0] == name for u in users):
            continue  # the table is data to some other op too
        small = _squeezed(value)
        if small.shape != value.shape:
            return Table(name, small)
    return NoMatch("no constant cos/sin table of rotary nodes only, with axes to drop")


def _squeezed(value: np.ndarray) -> np.ndarray:
    """The table without the leading axes it does not vary along."""
    for axis in range(value.ndim - 2):
        if value.shape[axis] > 1 and np.all(value == value.take([0], axis=axis)):
            value = value.take([0], axis=axis)
    if value.ndim > 2 and value.size == np.prod(value.shape[-2:]):
        value = value.reshape(value.shape[-2:])
    return np.ascontiguousarray(value)


def _rewrite_table(graph: Graph, rotary: Node, m: Table) -> None:
    graph.replace_op(m.name, Constant(m.value), ())


ROTARY = Pattern("rotary", Add, _match, _rewrite)
UNIT_COS = Pattern("rotary-unit-cos", Add, _match_unit_cos, _rewrite_unit_cos)
TABLE = Pattern("rotary-table", Rotary, _match_table, _rewrite_table)


@register_pass
@dataclass(frozen=True)
class RotaryIdioms(PatternPass):
    NAME = "idioms-rotary"
    PATTERNS = (ROTARY, UNIT_COS, TABLE)
