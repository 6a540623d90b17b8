"""Precision choice per value: int8 by default, int16 where accuracy needs it.

Codes pass unchanged through data-movement ops, so precision is chosen for the values that
compute ops produce, looking at who finally reads them. A value is widened (int16) when a
reader keeps its precision: a residual add, a normalization or softmax input, a rotary
input, a multiply operand, a GELU/SiLU input (the ramp + table recipe reads int16), or a
graph output. Readers that need int8 codes (linear, matmul, attention, LUT8) get a
requantized copy when the value is int16.
"""

from __future__ import annotations

from dataclasses import dataclass

from cimc.ir.graph import Graph
from cimc.ir.op_base import Op
from cimc.ir.ops import (
    Add,
    Concat,
    Div,
    Expand,
    Gather,
    Gelu,
    Im2col,
    LayerNorm,
    Mul,
    Reshape,
    RmsNorm,
    Rotary,
    Silu,
    Slice,
    Softmax,
    Sub,
    Transpose,
)

DATA_MOVEMENT: tuple[type[Op], ...] = (Reshape, Transpose, Slice, Concat, Gather, Expand, Im2col)

# Reasons a value is widened, by the reader op (operand positions) -> category name.
WIDE_READERS: dict[type[Op], tuple[tuple[int, ...], str]] = {
    Add: ((0, 1), "residual"),
    Sub: ((0, 1), "residual"),
    LayerNorm: ((0,), "norm"),
    RmsNorm: ((0,), "norm"),
    Softmax: ((0,), "softmax"),
    Rotary: ((0,), "rotary"),
    Mul: ((0, 1), "mul"),
    Div: ((0,), "mul"),
    Gelu: ((0,), "act"),
    Silu: ((0,), "act"),
}
WIDE_CATEGORIES = ("residual", "norm", "softmax", "rotary", "mul", "act", "output")


@dataclass(frozen=True)
class Precision:
    """Activation widths: `act_bits` by default, `wide_bits` for the `wide` categories.

    `wide_headroom` multiplies the calibrated range of wide values: an int16 value keeps 15
    bits of resolution with 2x headroom, and then survives evaluation inputs that exceed the
    calibration set's range (a tiny calibration set rarely sees the tails).
    """

    act_bits: int = 8
    wide_bits: int = 16
    wide: tuple[str, ...] = WIDE_CATEGORIES
    wide_headroom: float = 2.0

    def headroom(self, bits: int) -> float:
        return self.wide_headroom if bits > self.act_bits else 1.0

    def bits_for(self, categories: list[str]) -> int:
        return self.wide_bits if any(c in self.wide for c in categories) else self.act_bits


def through_data_movement(graph: Graph, name: str) -> list[tuple[str, int]]:
    """(reader, operand index) of the non-data-movement ops that read `name`'s codes."""
    found: list[tuple[str, int]] = []
    frontier, seen = [name], {name}
    while frontier:
        current = frontier.pop(0)
        for user in graph.users(current):
            node = graph.node(user)
            if isinstance(node.op, DATA_MOVEMENT):
                if user not in seen:
                    seen.add(user)
                    frontier.append(user)
                continue
            found.extend((user, k) for k, i in enumerate(node.inputs) if i == current)
    return sorted(set(found))


def reaches_output(graph: Graph, name: str) -> bool:
    """Whether `name`, or a data-movement view of it, is a graph output."""
    frontier, seen = [name], {name}
    while frontier:
        current = frontier.pop()
        if graph.is_output(current):
            return True
        for user in graph.users(current):
            if isinstance(graph.node(user).op, DATA_MOVEMENT) and user not in seen:
                seen.add(user)
                frontier.append(user)
    return False


def wide_reasons(graph: Graph, name: str) -> list[str]:
    """Categories of the readers of `name` that keep its precision (sorted, unique)."""
    reasons = set()
    for reader, k in through_data_movement(graph, name):
        rule = WIDE_READERS.get(type(graph.node(reader).op))
        if rule is not None and k in rule[0]:
            reasons.add(rule[1])
    if reaches_output(graph, name):
        reasons.add("output")
    return sorted(reasons)


def choose_bits(graph: Graph, precision: Precision) -> dict[str, int]:
    """Width of every float value a compute op (or a graph input) produces."""
    return {
        node.name: precision.bits_for(wide_reasons(graph, node.name))
        for node in graph.nodes()
        if node.type.dtype.is_float and not isinstance(node.op, DATA_MOVEMENT)
    }
