"""The map pass's `mapping=pipeline`: layers cut into stages on core groups, micro-batches
streamed through them (PIMCOMP's inter-layer pipelining, as a compiled mapping).

Why: spread runs every node on all cores one after another, so a batch of B elements goes
through the model as one wide pass; a node with little work (a norm over few rows, a small
matmul) leaves most cores waiting. A pipeline gives each stage (a contiguous run of nodes
in graph order) its own group of cores, with that stage's weights resident in the group's
macros, and runs the batch as micro-batches (micro_batch.py): while stage 1 computes
micro-batch 0, stage 0 already computes micro-batch 1. Latency of one element grows (it
crosses the stages one after another on fewer cores); throughput grows when the stages are
balanced and the batch is long enough to fill the pipe.

How the stages are cut: core groups are contiguous runs of the snake order (mesh
neighbours), as even as the cores allow. The nodes that emit code are cut where the
running work (`min_duration` of their work items, the time each would take on the whole
machine) is nearest the stage's share of what is left; a stage whose weights do not fit
its group's macros ends earlier, and one ends late enough for the later stages to hold
the rest (`_earliest_starts`). Each stage's tiles are then placed by the same algorithm
as spread (mapping.place) on the macros of its own cores. Preferring, near the balanced
cut, the one that sends the fewest bytes between stages was measured and dropped: on
BERT, GPT-2 and LLaMA tiny at batch 8 on `default` and `large` it was never faster and up
to 6.6% slower (benchmarks/FINDINGS.md, "Pipeline mapping"). The estimate is rough (it
leaves out the data movement that dominates small nodes): an exhaustive search over the
cuts of 2 stages of BERT tiny found one 8% faster than this one.

What it needs, else a one-line refusal: every weight resident (no streaming phases), a
batch of 2 or more split into micro-batches that no op mixes (batch_axes.py), and at least
as many code-emitting nodes as stages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cimc.backend.plan.bounds import min_duration
from cimc.backend.plan.from_graph import DECLARED
from cimc.backend.plan.mapping import PlacedMacro, Placement, place
from cimc.backend.plan.micro_batch import MicroBatches
from cimc.backend.plan.target import Target
from cimc.backend.plan.tiling import Tile, TilingPlan, pack
from cimc.backend.plan.workload import Workload
from cimc.errors import CimcError
from cimc.ir.graph import Graph, Node

WHERE = "pipeline"
STAGE_COUNTS = (2, 4, 8)  # tried when none is asked for (benchmarks/mapping_bench.py)
NOTE = "mapping"  # header comments of a pipelined program start so (inspect/mapping.py)


@dataclass(frozen=True)
class Stage:
    """Nodes (those that emit code, in graph order) run on `cores`."""

    index: int
    cores: tuple[int, ...]
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class PipelinePlan:
    stages: tuple[Stage, ...]
    micro: MicroBatches

    def stage_of(self) -> dict[str, int]:
        return {name: s.index for s in self.stages for name in s.nodes}

    def note(self) -> list[str]:
        """Header lines of a pipelined program: stages, their cores and their nodes."""
        m = self.micro
        lines = [
            f"{NOTE} pipeline: {len(self.stages)} stages, {m.count} micro-batches of "
            f"{m.batch // m.count} (batch {m.batch})"
        ]
        for s in self.stages:
            cores = ",".join(map(str, s.cores))
            lines.append(
                f"{NOTE} stage {s.index} on cores {cores}: %{s.nodes[0]} .. %{s.nodes[-1]} "
                f"({len(s.nodes)} nodes)"
            )
        return lines


def emits_code(node: Node) -> bool:
    return not isinstance(node.op, DECLARED)


def plan_stages(
    graph: Graph,
    workload: Workload,
    tiling: TilingPlan,
    target: Target,
    reserve: int,
    micro: MicroBatches,
    count: int,
) -> tuple[PipelinePlan, Placement]:
    """`count` stages of `graph` on `target` and the placement of every stage's tiles on
    its own cores' macros."""
    nodes = [n for n in graph.nodes() if emits_code(n)]
    if not 2 <= count <= min(target.cores, len(nodes)):
        raise CimcError(
            f"{count} stages: a pipeline needs 2 to {min(target.cores, len(nodes))} stages "
            f"here (cores {target.cores}, code-emitting nodes {len(nodes)})",
            WHERE,
        )
    groups = _core_groups(target, count)
    usable = target.macros_per_core - reserve
    capacity = [len(g) * usable for g in groups]
    by_layer = _tiles_by_layer(tiling.tiles)
    work = _node_work(workload, target, [n.name for n in nodes])
    cuts = _cuts(nodes, work, capacity, by_layer, target)
    bounds = list(zip([0, *cuts], [*cuts, len(nodes)], strict=True))
    plan_stages_ = tuple(
        Stage(i, groups[i], tuple(n.name for n in nodes[a:z])) for i, (a, z) in enumerate(bounds)
    )
    placement = _place(plan_stages_, by_layer, target, usable)
    return PipelinePlan(plan_stages_, micro), placement


def stage_counts(target: Target, micro_batches: int) -> list[int]:
    """The stage counts worth lowering: STAGE_COUNTS up to the cores and the micro-batches
    (a pipe longer than the micro-batches never fills), at least the shortest."""
    fits = [s for s in STAGE_COUNTS if s <= min(target.cores, micro_batches)]
    return fits or [STAGE_COUNTS[0]]


def _core_groups(target: Target, count: int) -> list[tuple[int, ...]]:
    order = target.snake_order()
    base, extra = divmod(len(order), count)
    groups, start = [], 0
    for i in range(count):
        end = start + base + (1 if i < extra else 0)
        groups.append(tuple(order[start:end]))
        start = end
    return groups


def _tiles_by_layer(tiles: Sequence[Tile]) -> dict[str, list[Tile]]:
    out: dict[str, list[Tile]] = {}
    for tile in tiles:
        out.setdefault(tile.layer, []).append(tile)
    return out


def _node_work(workload: Workload, target: Target, names: Sequence[str]) -> list[int]:
    """Each node's work: its work items' times on the whole machine (attention: 3 items)."""
    known = set(names)
    per: dict[str, int] = {}
    for item in workload.items:
        node = item.name if item.name in known else item.name.rsplit(".", 1)[0]
        per[node] = per.get(node, 0) + min_duration(item, target)
    return [per.get(name, 0) for name in names]


def _cuts(
    nodes: Sequence[Node],
    work: Sequence[int],
    capacity: Sequence[int],
    by_layer: Mapping[str, list[Tile]],
    target: Target,
) -> list[int]:
    """Positions p (a stage starts at node p), one per stage after the first."""
    total = max(1, sum(work))
    prefix = [0]
    for w in work:
        prefix.append(prefix[-1] + w)
    cuts: list[int] = []
    start = 0
    count = len(capacity)
    earliest = _earliest_starts(nodes, capacity, by_layer, target)
    for s in range(count - 1):
        left = count - s - 1  # stages after this one, each needs a node
        share = (total - prefix[start]) / (count - s)
        aim = prefix[start] + share
        fits = _fitting_end(nodes, start, capacity[s], by_layer, target)
        last = min(fits, len(nodes) - left)
        if last <= start:
            raise CimcError(
                f"stage {s}'s first layer does not fit the macros of its "
                f"{capacity[s]} free slots; use fewer stages or --mapping spread",
                WHERE,
            )
        # no cut before the later stages can hold the rest (else the last one overflows)
        first = max(start + 1, min(earliest[s + 1], last))
        best = min(range(first, last + 1), key=lambda p: abs(prefix[p] - aim))
        cuts.append(best)
        start = best
    rest = [t for n in nodes[start:] for t in by_layer.get(n.name, [])]
    if len(pack(rest, target.rows, target.cols)) > capacity[-1]:
        raise CimcError(
            f"the last stage's weights need {len(pack(rest, target.rows, target.cols))} "
            f"macros, its cores have {capacity[-1]} free; use fewer stages, a larger arch "
            "or --mapping spread",
            WHERE,
        )
    return cuts


def _earliest_starts(
    nodes: Sequence[Node],
    capacity: Sequence[int],
    by_layer: Mapping[str, list[Tile]],
    target: Target,
) -> list[int]:
    """earliest[s]: the first node stage s may start at for stages s.. to hold every node
    after it, each filled from the back as far as its macros allow (one node at least,
    one left for each earlier stage); earliest[0] = 0. Filling from the back reaches
    furthest, so a cut before earliest[s] leaves the later stages more than they hold."""
    count = len(capacity)
    earliest = [0] * count
    end = len(nodes)
    for s in range(count - 1, 0, -1):
        tiles = list(by_layer.get(nodes[end - 1].name, []))
        p = end - 1
        while p > s:
            extra = by_layer.get(nodes[p - 1].name, [])
            if extra and len(pack([*tiles, *extra], target.rows, target.cols)) > capacity[s]:
                break
            tiles += extra
            p -= 1
        earliest[s] = end = p
    return earliest


def _fitting_end(
    nodes: Sequence[Node],
    start: int,
    capacity: int,
    by_layer: Mapping[str, list[Tile]],
    target: Target,
) -> int:
    """The largest end p such that the tiles of nodes[start:p] fit `capacity` macros."""
    tiles: list[Tile] = []
    end = start
    for p in range(start, len(nodes)):
        extra = by_layer.get(nodes[p].name, [])
        if extra and len(pack([*tiles, *extra], target.rows, target.cols)) > capacity:
            break
        tiles += extra
        end = p + 1
    return end


def _place(
    stages: Sequence[Stage], by_layer: Mapping[str, list[Tile]], target: Target, usable: int
) -> Placement:
    macros: list[PlacedMacro] = []
    copies: list[tuple[str, int]] = []
    for stage in stages:
        tiles = [t for name in stage.nodes for t in by_layer.get(name, [])]
        if not tiles:
            continue
        slots = [(c, m) for c in stage.cores for m in range(usable)]
        placed = place(tiles, target, slots)
        macros += placed.macros
        copies += placed.copies
    order = {t.layer: t.layer_index for ts in by_layer.values() for t in ts}
    copies.sort(key=lambda lc: order[lc[0]])
    return Placement(target.rows, target.cols, tuple(macros), tuple(copies))
