"""Placement: capacities, disjoint windows, coverage per copy, locality, duplication."""

from __future__ import annotations

import numpy as np
import pytest
from backend_strategies import targets, workloads
from hypothesis import given, settings

from cimc.backend.plan.mapping import REDUCTION_GROUP, Placement, place
from cimc.backend.plan.target import Target, load_target
from cimc.backend.plan.tiling import tile_workload
from cimc.backend.plan.traffic import movement, reductions
from cimc.backend.plan.workload import MatmulLayer, TransformerDims, Workload, transformer_workload
from cimc.errors import CimcError


def assert_valid(placement: Placement, work: Workload, target: Target) -> None:
    slots = placement.slots
    assert len(set(slots)) == len(slots), "one image per macro"
    assert all(0 <= c < target.cores and 0 <= m < target.macros_per_core for c, m in slots)
    for pm in placement.macros:
        windows = pm.image.windows
        for i, a in enumerate(windows):
            assert a.r1 <= target.rows and a.c1 <= target.cols
            assert not any(a.overlaps(b) for b in windows[i + 1 :])
    for layer in work.layers:
        for copy in range(placement.copies_of(layer.name)):
            counts = np.zeros((layer.k, layer.n), dtype=np.int64)
            for pt in placement.tiles:
                if pt.tile.layer == layer.name and pt.copy == copy:
                    counts[pt.tile.k0 : pt.tile.k1, pt.tile.n0 : pt.tile.n1] += 1
            assert (counts == 1).all(), (layer.name, copy)
    assert 0.0 < placement.utilization <= 1.0


@settings(max_examples=60, deadline=None)
@given(work=workloads(max_layers=3, max_dim=60), target=targets(max_macros=40))
def test_random_placements_respect_capacity_and_cover_each_copy(
    work: Workload, target: Target
) -> None:
    tiles = tile_workload(work, target.rows, target.cols).tiles
    try:
        placement = place(tiles, target, workload=work, duplicate=True)
    except CimcError as e:
        assert "macros needed" in str(e)
        return
    assert_valid(placement, work, target)
    assert len(placement.macros) <= target.total_macros
    for red in reductions(placement, target):
        layer = work.item(red.layer)
        assert isinstance(layer, MatmulLayer)
        spans = sorted((pt.tile.k0, pt.tile.k1) for g in red.groups for pt in g.tiles)
        assert spans[0][0] == 0 and spans[-1][1] == layer.k
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
        assert len(red.groups[0].tiles) == max(len(g.tiles) for g in red.groups)
        assert len({g.core for g in red.groups}) == len(red.groups)


def test_capacity_overflow_names_the_numbers() -> None:
    target = Target("t", 1, (1, 1), 2, 8, 8)
    tiles = tile_workload(Workload((MatmulLayer("w", 24, 8, 1),)), 8, 8).tiles
    with pytest.raises(CimcError, match="3 macros needed, 2 available"):
        place(tiles, target)


def test_reduction_partners_stay_on_one_core_when_a_column_fits() -> None:
    # default: 16 macros a core; a K=768 column is 6 tiles, so no partial sum moves.
    target = load_target("default")
    work = Workload((MatmulLayer("a", 768, 768, 16), MatmulLayer("b", 768, 256, 16)))
    placement = place(tile_workload(work, 128, 128).tiles, target, workload=work)
    assert_valid(placement, work, target)
    cores: dict[tuple[str, int], set[int]] = {}
    for pt in placement.tiles:
        cores.setdefault((pt.tile.layer, pt.tile.nb), set()).add(pt.core)
    assert all(len(c) == 1 for c in cores.values())
    moved = movement(placement, work, target)
    assert moved.partial_bytes == 0
    # 6-tile columns go whole, round robin: a's six blocks on the first six cores in
    # snake order, one each (they compute in parallel), b's two on the next two
    # (default has 4 cores: the round wraps after four blocks)
    snake = target.snake_order()
    a_cores = [min(c) for (layer, _), c in sorted(cores.items()) if layer == "a"]
    assert a_cores == [snake[i % 4] for i in range(6)]
    b_cores = [min(c) for (layer, _), c in sorted(cores.items()) if layer == "b"]
    assert b_cores == [snake[6 % 4], snake[7 % 4]]


def test_long_reduction_columns_split_into_groups_on_several_cores() -> None:
    # K=3072 on 128-row macros: 24 tiles a column; a core chains its tiles into one
    # accumulator, so the column is cut into groups of REDUCTION_GROUP on distinct cores
    target = load_target("large")
    work = Workload((MatmulLayer("down", 3072, 256, 128),))
    placement = place(tile_workload(work, 128, 128).tiles, target, workload=work)
    assert_valid(placement, work, target)
    for nb in (0, 1):
        per_core: dict[int, int] = {}
        for pt in placement.tiles:
            if pt.tile.nb == nb:
                per_core[pt.core] = per_core.get(pt.core, 0) + 1
        assert sorted(per_core.values()) == [REDUCTION_GROUP] * (24 // REDUCTION_GROUP)
    assert len({pt.core for pt in placement.tiles}) == 2 * 24 // REDUCTION_GROUP


def test_columns_longer_than_a_core_move_partials_to_a_neighbour() -> None:
    target = Target("t", 2, (2, 1), 4, 8, 8)
    work = Workload((MatmulLayer("w", 48, 8, 3),))  # one column of 6 tiles, 4 macros a core
    placement = place(tile_workload(work, 8, 8).tiles, target, workload=work)
    moved = movement(placement, work, target)
    assert moved.partial_bytes == 3 * 8 * 4  # core 1's partial sum, int32
    assert moved.partial_hop_bytes == moved.partial_bytes  # neighbours: one hop
    assert moved.input_bytes == 3 * 48  # every K-range delivered to exactly one core
    (red,) = reductions(placement, target)
    assert (red.home, red.senders) == (0, (1,))
    assert [pt.tile.kb for pt in red.groups[0].tiles] == [0, 1, 2, 3]  # mvm, then mvm.acc
    assert [pt.tile.kb for pt in red.groups[1].tiles] == [4, 5]


def test_large_preset_holds_bert_base_with_high_utilization() -> None:
    target = load_target("large")
    work = transformer_workload(TransformerDims(12, 768, 12, 3072, 128))
    tiles = tile_workload(work, target.rows, target.cols).tiles
    placement = place(tiles, target, workload=work)
    assert len(placement.macros) == 5184
    assert placement.utilization >= 0.9
    # only the FFN-down columns (K=3072: 24 tiles) are split, into 4 groups of 6: three
    # int32 partial sums of 128 x 128 per column, 6 columns, 12 layers
    assert movement(placement, work, target).partial_bytes == 12 * 6 * 3 * 128 * 128 * 4


def test_duplication_fills_free_macros_with_hot_layers() -> None:
    target = Target("t", 2, (2, 1), 4, 32, 32)
    work = Workload(
        (MatmulLayer("small", 32, 32, 8), MatmulLayer("big", 64, 64, 8, depends_on=("small",)))
    )
    tiles = tile_workload(work, 32, 32).tiles
    placement = place(tiles, target, workload=work, duplicate=True)
    assert_valid(placement, work, target)
    # 5 macros used by one copy; 3 free: 'big' ties on time, wins on weight, but needs 4,
    # so 'small' gets copies, at most one per core (a third would wait for a core that
    # already runs one): 2 copies on the 2 cores, one macro left free.
    assert placement.duplicated == (("small", 2),)
    assert len(placement.macros) == 6
    small = [pt for pt in placement.tiles if pt.tile.layer == "small"]
    assert sorted((pt.copy, pt.core) for pt in small) in ([(0, 0), (1, 1)], [(0, 1), (1, 0)])
    assert placement_without_dup_is_smaller(tiles, target)


def placement_without_dup_is_smaller(tiles: tuple, target: Target) -> bool:  # type: ignore[type-arg]
    return len(place(tiles, target).macros) == 5


def test_placement_is_deterministic() -> None:
    target = load_target("tiny")
    work = transformer_workload(TransformerDims(1, 96, 3, 250, 7))
    tiles = tile_workload(work, 32, 32).tiles
    slots = [(c, m) for c in range(2) for m in range(4)]
    chunk = tiles[:8]
    assert place(chunk, target, slots) == place(tuple(reversed(chunk)), target, slots)


def test_columns_skip_to_the_next_core_rather_than_split() -> None:
    # 3 cores x 8 macros: a (6 tiles) on core 0, b (6) on 1, c (2) on 2; d (4) does not
    # fit cores 0 or 1 (2 free each) and goes whole to core 2 instead of split over 0, 1
    target = Target("t", 3, (3, 1), 8, 8, 8)
    work = Workload(
        (
            MatmulLayer("a", 48, 8, 1),
            MatmulLayer("b", 48, 8, 1),
            MatmulLayer("c", 16, 8, 1),
            MatmulLayer("d", 32, 8, 1),
        )
    )
    placement = place(tile_workload(work, 8, 8).tiles, target, workload=work)
    assert_valid(placement, work, target)
    cores = {n: sorted({pt.core for pt in placement.tiles if pt.tile.layer == n}) for n in "abcd"}
    assert cores == {"a": [0], "b": [1], "c": [2], "d": [2]}
