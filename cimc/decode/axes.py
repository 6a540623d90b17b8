"""Which axes of every value of a decoder graph are sequence axes, and of which kind.

Found by probing, not by per-op rules: the model is imported and quantized at two
lengths C and C' (C-1), and an axis is a sequence axis exactly when its size is C in the
first graph and C' in the second. This is exact whatever reshapes, transposes or folds
the exporter produced, and no dimension that merely equals C (a head size, say) is taken
for one. Rotary tables (held in plans, not values) are probed the same way.

A sequence axis is a *key* axis when the value only feeds attention masks (the mask runs
over the cache's C slots, whatever the rows computed), else a *token* axis (its size
becomes the number of rows computed: P for prefill, 1 for decode).
"""

from __future__ import annotations

from dataclasses import dataclass

from cimc.errors import CimcError
from cimc.ir.graph import Graph, Node
from cimc.quant.dialect import QAttention, QRotary

MASK_OPERAND = 3  # q.attention(q, k, v, mask)


@dataclass(frozen=True)
class SeqAxes:
    """Sequence axes per value name, split into token and key axes."""

    capacity: int
    token: dict[str, tuple[int, ...]]  # values whose rows are the computed tokens
    key: dict[str, tuple[int, ...]]  # values indexed by cache slot (attention masks)
    rotary: dict[str, int]  # q.rotary node -> its tables' sequence axis (of cos.shape)


def probe_axes(graph: Graph, probe: Graph, capacity: int, probe_len: int) -> SeqAxes:
    """Sequence axes of `graph` (capacity C) from `probe` (the same model at `probe_len`)."""
    lengths = (capacity, probe_len)
    axes: dict[str, tuple[int, ...]] = {}
    rotary: dict[str, int] = {}
    for node in graph.nodes():
        other = _twin(probe, node)
        axes[node.name] = _diff(node.type.shape, other.type.shape, lengths, node)
        if isinstance(node.op, QRotary) and isinstance(other.op, QRotary):
            table = _diff(node.op.plan.cos.shape, other.op.plan.cos.shape, lengths, node)
            if len(table) != 1:
                raise CimcError("rotary tables without one sequence axis", node.where)
            rotary[node.name] = table[0]
    if not any(axes.values()):
        raise CimcError(
            "the model has no dynamic sequence dimension (every shape is the same at two "
            "sequence lengths); export it with a symbolic sequence axis, as decoders are",
            "decode",
        )
    key = _key_values(graph, axes)
    token = {n: a for n, a in axes.items() if a and n not in key}
    return SeqAxes(capacity, token, {n: axes[n] for n in key}, rotary)


def _twin(probe: Graph, node: Node) -> Node:
    if node.name not in probe:
        raise CimcError(
            "the graph changes structure with the sequence length (a value exists at one "
            "length only); cannot derive prefill and decode programs from it",
            node.where,
        )
    other = probe.node(node.name)
    if other.op.NAME != node.op.NAME or other.inputs != node.inputs:
        raise CimcError(
            f"the graph changes structure with the sequence length ({node.op.NAME} here, "
            f"{other.op.NAME} one position longer)",
            node.where,
        )
    return other


def _diff(
    a: tuple[int, ...], b: tuple[int, ...], lengths: tuple[int, int], node: Node
) -> tuple[int, ...]:
    if len(a) != len(b):
        raise CimcError("the value's rank changes with the sequence length", node.where)
    out = []
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x == y:
            continue
        if (x, y) != lengths:
            raise CimcError(
                f"axis {i} is {x} at sequence length {lengths[0]} and {y} at {lengths[1]}; "
                "only axes of exactly the sequence length can be specialized",
                node.where,
            )
        out.append(i)
    return tuple(out)


def _key_values(graph: Graph, axes: dict[str, tuple[int, ...]]) -> set[str]:
    """Values with sequence axes that reach nothing but attention masks."""
    key: set[str] = set()
    for node in reversed(graph.nodes()):
        if not axes[node.name] or graph.is_output(node.name):
            continue
        users = graph.users(node.name)
        if users and all(_mask_use(graph, u, node.name, key) for u in users):
            key.add(node.name)
    return key


def _mask_use(graph: Graph, user: str, value: str, key: set[str]) -> bool:
    node = graph.node(user)
    if isinstance(node.op, QAttention):
        return all(i == MASK_OPERAND for i, name in enumerate(node.inputs) if name == value)
    return user in key
