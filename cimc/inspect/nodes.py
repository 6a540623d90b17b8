"""Per-node view: instructions grouped by their source comment (the graph node), with the
busy cycles, span and energy the schedule simulation gives them."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from cimc.errors import CimcError
from cimc.machine.schedule import Schedule, Scheduled

NO_SOURCE = "(no source location)"


def node_of(item: Scheduled) -> str:
    return item.instr.comment or NO_SOURCE


@dataclass(frozen=True)
class NodeStats:
    """What one graph node costs: `busy_cycles` sums its instructions' unit time (units of
    different cores and macros overlap, so it can exceed the span); `span` runs from its
    first start to its last end."""

    name: str
    instructions: int
    busy_cycles: int
    first_start: int
    last_end: int
    energy_pj: float
    macs: int
    offchip_bytes: int
    opcodes: dict[str, int]

    @property
    def span_cycles(self) -> int:
        return self.last_end - self.first_start

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "instructions": self.instructions,
            "busy_cycles": self.busy_cycles,
            "span_cycles": self.span_cycles,
            "first_start_cycle": self.first_start,
            "last_end_cycle": self.last_end,
            "energy_pj": self.energy_pj,
            "macs": self.macs,
            "offchip_bytes": self.offchip_bytes,
            "opcodes": self.opcodes,
        }


def _groups(schedule: Schedule) -> dict[str, list[Scheduled]]:
    groups: dict[str, list[Scheduled]] = defaultdict(list)
    for item in schedule.items:
        if item.instr.opcode not in ("halt", "barrier"):  # synchronisation belongs to no node
            groups[node_of(item)].append(item)
    return groups


def node_stats(schedule: Schedule) -> tuple[NodeStats, ...]:
    """One row per graph node, in order of first start (the order the chip runs them)."""
    rows = [_stats(name, items) for name, items in _groups(schedule).items()]
    return tuple(sorted(rows, key=lambda r: (r.first_start, r.name)))


def _stats(name: str, items: list[Scheduled]) -> NodeStats:
    offchip = sum(
        n for i in items for s, d, n in i.cost.moved if "dram" in (s, d) or "flash" in (s, d)
    )
    return NodeStats(
        name=name,
        instructions=len(items),
        busy_cycles=sum(i.cost.cycles for i in items),
        first_start=min(i.start for i in items),
        last_end=max(i.end for i in items),
        energy_pj=sum(i.cost.energy.total for i in items),
        macs=sum(i.cost.macs for i in items),
        offchip_bytes=offchip,
        opcodes=dict(sorted(Counter(i.instr.opcode for i in items).items())),
    )


def find_node(schedule: Schedule, name: str) -> str:
    """The node `name` names: an exact comment, else the one comment containing it as a word
    (`linear_1` finds `%linear_1 (node_linear_1)`); ambiguity and absence are errors."""
    names = sorted(_groups(schedule))
    if name in names:
        return name
    hits = [n for n in names if name in n.replace("(", " ").replace(")", " ").split()]
    hits = hits or [n for n in names if name in n]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise CimcError(f"node {name!r} is ambiguous: {_some(hits)}; give more of it", "--node")
    raise CimcError(f"no node {name!r}; the program has {len(names)}: {_some(names)}", "--node")


def _some(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def node_listing(schedule: Schedule, name: str) -> tuple[Scheduled, ...]:
    """The node's instructions in program order (core, then position in the stream)."""
    node = find_node(schedule, name)
    items = [i for i in schedule.items if node_of(i) == node and i.instr.opcode != "halt"]
    return tuple(sorted(items, key=lambda i: (i.core, i.pc)))
