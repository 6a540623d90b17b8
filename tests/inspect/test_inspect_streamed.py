"""`cimc inspect` on a weight-streamed program: loads from `weights.img` are named by the
layer tile the image's header map puts there, and that tile holds those weights."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from cimc.backend.builder.compiled import Compiled
from cimc.backend.builder.saved import write_compiled
from cimc.backend.builder.values import decl_name
from cimc.backend.stages.backend import compile_graph
from cimc.backend.stream.prefetch import IMAGE
from cimc.cli import main
from cimc.inspect.image import image_tiles, tile_label
from cimc.inspect.macros import chip_phases, macro_phases
from cimc.quant.quantize import quantize_model
from tests.e2e.e2e_helpers import arch, float_input, import_module, mlp
from tests.inspect.conftest import MLP, Loaded, loaded

TILE = re.compile(r"(\w+)\.w\[(\d+):(\d+), (\d+):(\d+)\]")


@pytest.fixture(scope="module")
def streamed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Compiled, dict, Path]:
    """A 64 -> 96 -> 80 -> 64 MLP (20 KiB of weights; `tiny` holds 8 KiB) streamed."""
    graph = quantize_model(import_module(mlp((64, 96, 80, 64)), float_input((1, 6, 64)))).graph
    compiled = compile_graph(graph, arch("tiny"), streaming="double-buffer")
    weights = {
        decl_name(n.name): np.asarray(n.op.plan.weight)  # type: ignore[attr-defined]
        for n in graph.nodes()
        if n.op.NAME == "q.linear"
    }
    path = write_compiled(compiled, tmp_path_factory.mktemp("streamed") / "mlp.cimasm")[0]
    return compiled, weights, path


def test_every_streamed_tile_is_named_and_holds_its_weights(streamed) -> None:  # type: ignore[no-untyped-def]
    compiled, weights, path = streamed
    program, _, schedule = loaded(path)
    image = compiled.consts[IMAGE].reshape(-1)
    covered = {name: np.zeros(w.shape, int) for name, w in weights.items()}
    for p in macro_phases(program, schedule):
        m = TILE.fullmatch(p.source.label)
        assert m, p.source.label
        name, r0, r1, c0, c1 = m[1], *map(int, m.groups()[1:])
        assert p.node.startswith(f"%{name} ")  # the tile belongs to the node that loads it
        assert p.source.decl == IMAGE and p.source.via == f"{IMAGE}+{p.source.offset}"
        # the bytes the map names are that layer's weights (not only a consistent label)
        got = image[p.source.offset : p.source.offset + (r1 - r0) * (c1 - c0)]
        assert np.array_equal(got.reshape(r1 - r0, c1 - c0), weights[name][r0:r1, c0:c1])
        wr0, wr1, wc0, wc1 = p.window
        assert (r1 - r0, c1 - c0) == (wr1 - wr0, wc1 - wc0)
        covered[name][r0:r1, c0:c1] += 1
    assert all((grid == 1).all() for grid in covered.values())  # each weight loaded once


def test_macro_view_and_chip_json_show_streamed_tiles(streamed, capsys) -> None:  # type: ignore[no-untyped-def]
    _, _, path = streamed
    assert main(["inspect", str(path), "--macro", "0.0"]) == 0
    out = capsys.readouterr().out
    assert "linear.w[0:32, 0:32] via" in out and f"{IMAGE}+0" in out
    assert f"{IMAGE}[0:1" not in out  # no raw image byte ranges left
    assert main(["inspect", str(path), "--json"]) == 0
    chips = json.loads(capsys.readouterr().out)["chip_phases"]
    tiles = [m for ph in chips for m in ph["macros"]]
    assert tiles and all(TILE.fullmatch(m["tile"]) for m in tiles)
    assert all(m["tile_via"].startswith(f"{IMAGE}+") for m in tiles)
    program, _, schedule = loaded(path)
    assert len(chips) == len(chip_phases(macro_phases(program, schedule), schedule.makespan))


def test_map_cuts_sub_tiles_and_refuses_straddles(streamed) -> None:  # type: ignore[no-untyped-def]
    _, _, path = streamed
    program, _, _ = loaded(path)
    tiles = image_tiles(program)[IMAGE]
    first = tiles[0]  # linear.w[0:32, 0:32] at 0, 32 bytes a row
    assert (first.offset, first.name, first.nbytes) == (0, "linear.w", 1024)
    assert tile_label(tiles, 0, 1023) == "linear.w[0:32, 0:32]"
    assert tile_label(tiles, 2 * 32 + 4, 3 * 32 + 7) == "linear.w[2:4, 4:8]"  # rows 2-3
    assert tile_label(tiles, 1000, 1100) is None  # straddles two tiles: not one tile
    assert image_tiles(loaded(MLP)[0]) == {}  # no streaming, no map


def test_unstreamed_labels_unchanged(mlp: Loaded) -> None:
    program, _, schedule = mlp
    sources = [p.source for p in macro_phases(program, schedule)]
    assert all(s.via is None and s.text == s.label for s in sources)
