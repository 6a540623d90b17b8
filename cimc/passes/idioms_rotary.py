"""idioms-rotary: HF rotary embedding -> rotary(x, cos, sin).

x * cos + cat(-x[..., D/2:], x[..., :D/2]) * sin      (operands in any order)
x + cat(-x[..., D/2:], x[..., :D/2]) * sin            (cos = 1: position 0 alone)
cat(x1 * c - x2 * s, x1 * s + x2 * c)                  (x1, x2 the halves of x, c and s
                                                        tables of D/2: ONNX RotaryEmbedding;
                                                        cos = cat(c, c), sin = cat(s, s))
A rotary of [B, S, H, D] values with [.., S, 1, D] tables (RotaryEmbedding's layout) is
turned heads-first between two transposes (which cancel the exporter's own).

cos and sin are any values broadcasting into x. A constant table that only rotary nodes
use loses the leading axes it does not vary along (HF's [1, 1, S, D] becomes [S, D]).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cimc.ir.graph import Graph, Node
from cimc.ir.ops import Add, Concat, Constant, Mul, Neg, Rotary, Slice, Sub, Transpose
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


@dataclass(frozen=True)
class HalvesMatch:
    x: str
    c: str  # the half tables
    s: str


def _products(graph: Graph, name: str) -> list[tuple[str, str]]:
    """(a, b) and (b, a) for name = a * b."""
    mul = producer(graph, name, Mul)
    return list(operand_pairs(mul)) if mul is not None else []


def _halves(graph: Graph, x1: str, x2: str) -> str | None:
    """x when x1, x2 are x[..., :D/2] and x[..., D/2:]."""
    a, b = producer(graph, x1, Slice), producer(graph, x2, Slice)
    if a is None or b is None or a.inputs != b.inputs:
        return None
    assert isinstance(a.op, Slice) and isinstance(b.op, Slice)
    shape = graph.node(a.inputs[0]).type.shape
    d, last = shape[-1], len(shape) - 1
    ok = (a.op.axis, a.op.start, a.op.stop, b.op.axis, b.op.start, b.op.stop) == (
        last,
        0,
        d // 2,
        last,
        d // 2,
        d,
    )
    return a.inputs[0] if ok and d % 2 == 0 and a.op.step == b.op.step == 1 else None


def _match_halves(graph: Graph, cat: Node) -> HalvesMatch | NoMatch:
    assert isinstance(cat.op, Concat)
    if len(cat.inputs) != 2 or cat.op.axis != cat.type.rank - 1:
        return NoMatch("not a concat of two halves on the last axis")
    real, imag = (graph.node(i) for i in cat.inputs)
    if not isinstance(real.op, Sub) or not isinstance(imag.op, Add):
        return NoMatch("not cat(x1 * c - x2 * s, x1 * s + x2 * c)")
    for x1, c in _products(graph, real.inputs[0]):
        for x2, s in _products(graph, real.inputs[1]):
            x = _halves(graph, x1, x2)
            if x is None or graph.node(x).type.shape != cat.type.shape:
                continue
            wanted = {(x1, s), (x2, c)}
            for p, q in operand_pairs(imag):
                found = {pair for pair in _products(graph, p) if pair in wanted}
                found |= {pair for pair in _products(graph, q) if pair in wanted}
                half = graph.node(x1).type.shape
                fits = all(broadcasts_into(graph.node(t).type.shape, half) for t in (c, s))
                if found == wanted and fits:
                    return HalvesMatch(x, c, s)
    return NoMatch("not cat(x1 * c - x2 * s, x1 * s + x2 * c) of the halves x1, x2 of x")


def _rewrite_halves(graph: Graph, cat: Node, m: HalvesMatch) -> None:
    tables = []
    for half, what in ((m.c, "cos"), (m.s, "sin")):
        value = const_array(graph, half)
        if value is not None:
            full = np.concatenate([value, value], axis=-1).astype(np.float32)
            tables.append(graph.add_constant(full, f"{cat.name}.{what}", cat.loc))
        else:
            axis = graph.node(half).type.rank - 1
            tables.append(graph.add_node(Concat(axis), [half, half], f"{cat.name}.{what}", cat.loc))
    graph.replace_op(cat.name, Rotary(), [m.x, *tables])


def _match_seq_major(graph: Graph, rotary: Node) -> tuple[np.ndarray, np.ndarray] | NoMatch:
    """[S, D] tables when x is [B, S, H, D] and the tables [.., S, 1, D] (constant)."""
    x = graph.node(rotary.inputs[0]).type.shape
    tables = [const_array(graph, t) for t in rotary.inputs[1:]]
    if len(x) != 4 or any(t is None for t in tables):
        return NoMatch("not a [B, S, H, D] rotary with constant tables")
    out = []
    for t in tables:
        assert t is not None
        full = np.broadcast_to(t, (*(1,) * (4 - t.ndim), *t.shape))
        if full.shape[2] != 1 or full.shape[1] != x[1] or x[1] == 1:
            return NoMatch("the tables do not vary along axis 1 of [B, S, H, D] alone")
        if not np.all(full == full[:1]):
            return NoMatch("the tables vary along the batch")
        out.append(np.ascontiguousarray(full[0, :, 0, :]).astype(np.float32))
    return out[0], out[1]


def _rewrite_seq_major(graph: Graph, rotary: Node, tables: tuple[np.ndarray, np.ndarray]) -> None:
    """transpose to [B, H, S, D], rotate with [S, D] tables, transpose back."""
    swap = (0, 2, 1, 3)
    xt = graph.add_node(Transpose(swap), [rotary.inputs[0]], f"{rotary.name}.heads", rotary.loc)
    cos = graph.add_constant(tables[0], f"{rotary.name}.cos", rotary.loc)
    sin = graph.add_constant(tables[1], f"{rotary.name}.sin", rotary.loc)
    inner = graph.add_node(Rotary(), [xt, cos, sin], f"{rotary.name}.rot", rotary.loc)
    graph.replace_op(rotary.name, Transpose(swap), [inner])


ROTARY = Pattern("rotary", Add, _match, _rewrite)
SEQ_MAJOR = Pattern("rotary-seq-major", Rotary, _match_seq_major, _rewrite_seq_major)
HALVES = Pattern("rotary-halves", Concat, _match_halves, _rewrite_halves)
UNIT_COS = Pattern("rotary-unit-cos", Add, _match_unit_cos, _rewrite_unit_cos)
TABLE = Pattern("rotary-table", Rotary, _match_table, _rewrite_table)


@register_pass
@dataclass(frozen=True)
class RotaryIdioms(PatternPass):
    NAME = "idioms-rotary"
    PATTERNS = (ROTARY, UNIT_COS, HALVES, SEQ_MAJOR, TABLE)
