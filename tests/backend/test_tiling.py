"""Tiling covers every weight element once; packing keeps windows disjoint and inside."""

from __future__ import annotations

import itertools

import numpy as np
from backend_strategies import workloads
from hypothesis import given, settings
from hypothesis import strategies as st

from cimc.backend.plan.tiling import (
    MacroImage,
    Tile,
    cut_points,
    pack,
    tile_layer,
    tile_workload,
    utilization,
)
from cimc.backend.plan.workload import MatmulLayer, Workload


def coverage(tiles: list[Tile] | tuple[Tile, ...], k: int, n: int) -> np.ndarray:
    counts = np.zeros((k, n), dtype=np.int64)
    for t in tiles:
        counts[t.k0 : t.k1, t.n0 : t.n1] += 1
    return counts


def assert_images_valid(images: tuple[MacroImage, ...], rows: int, cols: int) -> None:
    for image in images:
        assert image.windows, "an allocated macro holds at least one tile"
        for w in image.windows:
            assert w.r0 >= 0 and w.r1 <= rows and w.c0 >= 0 and w.c1 <= cols
        for i, a in enumerate(image.windows):
            for b in image.windows[i + 1 :]:
                assert not a.overlaps(b), (a, b)


@settings(deadline=None)
@given(
    k=st.integers(1, 300), n=st.integers(1, 300), rows=st.integers(3, 64), cols=st.integers(3, 64)
)
def test_every_element_in_exactly_one_tile(k: int, n: int, rows: int, cols: int) -> None:
    lt = tile_layer(MatmulLayer("w", k, n, 1), 0, rows, cols)
    assert (coverage(lt.tiles, k, n) == 1).all()
    assert all(1 <= t.rows <= rows and 1 <= t.cols <= cols for t in lt.tiles)
    assert len(lt.tiles) == -(-k // rows) * -(-n // cols)


@settings(deadline=None)
@given(k=st.integers(1, 200), rows=st.integers(2, 40))
def test_partners_share_columns_and_cover_the_reduction(k: int, rows: int) -> None:
    lt = tile_layer(MatmulLayer("w", k, 70, 1), 0, rows, 32)
    for tile in lt.tiles:
        group = (tile, *lt.partners(tile))
        assert all((t.n0, t.n1) == (tile.n0, tile.n1) for t in group)
        assert sorted((t.k0, t.k1) for t in group) == list(itertools.pairwise(lt.k_cuts))


def test_cut_points_put_the_edge_block_last() -> None:
    assert cut_points(250, 32) == (0, 32, 64, 96, 128, 160, 192, 224, 250)
    assert cut_points(7, 32) == (0, 7)
    assert cut_points(64, 32) == (0, 32, 64)


@settings(max_examples=60, deadline=None)
@given(
    work=workloads(),
    rows=st.integers(4, 32),
    cols=st.integers(4, 32),
    span=st.sampled_from([None, 1, 2]),
)
def test_packing_is_disjoint_complete_and_never_worse(
    work: Workload, rows: int, cols: int, span: int | None
) -> None:
    tiles = tile_workload(work, rows, cols).tiles
    images = pack(tiles, rows, cols, span)
    assert_images_valid(images, rows, cols)
    packed = sorted(w.tile.key for image in images for w in image.windows)
    assert packed == sorted(t.key for t in tiles)
    assert len(images) <= len(tiles)
    assert 0.0 < utilization(images, rows, cols) <= 1.0
    if span is not None:
        for image in images:
            assert len({w.tile.layer_index // span for w in image.windows}) == 1


def test_small_reduction_tiles_stack_in_one_macro() -> None:
    # k=7 on 32x32: eight 7-row tiles; shelves of 7 rows stack four per macro.
    lt = tile_layer(MatmulLayer("w", 7, 250, 7), 0, 32, 32)
    images = pack(lt.tiles, 32, 32)
    assert len(lt.tiles) == 8 and len(images) == 2
    assert utilization(images, 32, 32) == 7 * 250 / (2 * 32 * 32)
    assert [w.r0 for w in images[0].windows] == [0, 7, 14, 21]


def test_narrow_edge_columns_of_neighbours_share_a_macro() -> None:
    # n=10 edge columns (10 wide) of three layers fit side by side in one 32-wide shelf.
    layers = [MatmulLayer(f"l{i}", 32, 42, 1) for i in range(3)]
    tiles = tile_workload(Workload(tuple(layers)), 32, 32).tiles
    images = pack(tiles, 32, 32)
    assert len(images) == 4  # three full tiles + one macro of three 32x10 edges
    shared = [image for image in images if len(image.windows) == 3][0]
    assert [(w.r0, w.c0) for w in shared.windows] == [(0, 0), (0, 10), (0, 20)]
    # with span=1 layers may not share: one macro per edge tile
    assert len(pack(tiles, 32, 32, span=1)) == 6


def test_odd_transformer_dims_on_tiny_macros() -> None:
    work = Workload(
        (
            MatmulLayer("qkv", 96, 3 * 96, 7),
            MatmulLayer("fc1", 96, 250, 7, depends_on=("qkv",)),
            MatmulLayer("fc2", 250, 96, 7, depends_on=("fc1",)),
            MatmulLayer("head", 96, 7, 7, depends_on=("fc2",)),
        )
    )
    plan = tile_workload(work, 32, 32)
    for lt in plan.layers:
        assert (coverage(lt.tiles, lt.layer.k, lt.layer.n) == 1).all()
    assert plan.of("fc2").k_cuts[-2:] == (224, 250)
    images = pack(plan.tiles, 32, 32)
    assert_images_valid(images, 32, 32)
    # the three 32x7 head tiles share one macro: 3 + 9 + 24 + 24 full-ish macros + 1
    assert len(images) == 27 + 24 + 24 + 1
    assert utilization(images, 32, 32) > 0.97
