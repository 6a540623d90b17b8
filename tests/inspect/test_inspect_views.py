"""Per-node statistics, weight-tile provenance and macro phases of real programs."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from cimc.errors import CimcError
from cimc.inspect.macros import chip_phases, macro_phases, parse_macro_spec
from cimc.inspect.nodes import NO_SOURCE, find_node, node_listing, node_stats
from cimc.inspect.tiles import trace_source
from cimc.machine.opcodes import spec_of
from tests.inspect.conftest import DOUBLE, MATMUL, MLP, Loaded, loaded


@pytest.mark.parametrize("path", [MATMUL, DOUBLE, MLP], ids=lambda p: p.stem)
def test_node_stats_partition_the_schedule(path) -> None:  # type: ignore[no-untyped-def]
    program, arch, schedule = loaded(path)
    stats = node_stats(schedule)
    work = [i for i in schedule.items if i.instr.opcode not in ("halt", "barrier")]
    assert sum(s.instructions for s in stats) == len(work)
    assert sum(s.busy_cycles for s in stats) == sum(i.cost.cycles for i in work)
    assert sum(s.macs for s in stats) == sum(i.cost.macs for i in work)
    assert sum(s.energy_pj for s in stats) == pytest.approx(sum(i.cost.energy.total for i in work))
    for s in stats:
        assert sum(s.opcodes.values()) == s.instructions
        assert 0 <= s.first_start < s.last_end <= schedule.makespan


def test_mlp_nodes_are_graph_nodes(mlp: Loaded) -> None:
    _, _, schedule = mlp
    names = [s.name.split(" ")[0] for s in node_stats(schedule)]
    assert names == ["%linear", "%relu", "%linear_1"]  # in the order the chip runs them
    linear = node_stats(schedule)[0]
    assert linear.macs == 7 * 40 * 70 and linear.opcodes["mload"] >= 4


def test_node_listing_times_each_instruction(mlp: Loaded) -> None:
    _, _, schedule = mlp
    items = node_listing(schedule, "linear_1")
    assert items and all(i.instr.comment.startswith("%linear_1 ") for i in items)
    assert [(i.core, i.pc) for i in items] == sorted((i.core, i.pc) for i in items)
    assert all(i.end - i.start == i.cost.cycles for i in items if i.instr.opcode != "recv")


def test_find_node_errors_name_what_exists(mlp: Loaded) -> None:
    _, _, schedule = mlp
    assert find_node(schedule, "relu").startswith("%relu ")
    with pytest.raises(CimcError, match=r"no node 'conv'.*has 3: '%linear \(") as e:
        find_node(schedule, "conv")
    assert "\n" not in str(e.value)
    with pytest.raises(CimcError, match="ambiguous"):
        find_node(schedule, "lin")
    _, _, matmul = loaded(MATMUL)
    assert find_node(matmul, NO_SOURCE) == NO_SOURCE


def test_tiles_traced_through_strided_dmas_match_the_comments() -> None:
    """matmul_2core's author labelled every mload with its tile of w by hand."""
    program, _, _ = loaded(MATMUL)
    seen = 0
    for stream in program.cores:
        for pc, instr in enumerate(stream.instrs):
            if instr.opcode == "mload":
                assert trace_source(program, stream.core, pc).label == instr.comment
                seen += 1
    assert seen == 4


def test_double_buffered_tiles_follow_the_last_write() -> None:
    program, _, schedule = loaded(DOUBLE)
    phases = macro_phases(program, schedule)
    labels = {(p.macro, p.index): p.source.label for p in phases}
    assert labels == {
        (0, 0): "w[0:32, 0:32]",
        (1, 0): "w[32:64, 0:32]",
        (0, 1): "w[64:96, 0:32]",
        (1, 1): "w[96:128, 0:32]",
    }
    assert all(p.source.kind == "const" and len(p.uses) == 1 for p in phases)


def test_mlp_tiles_cover_each_weight_exactly_once(mlp: Loaded) -> None:
    _check_tiles_cover_weights(mlp)


@pytest.mark.slow
def test_fresh_compile_tiles_cover_each_weight_exactly_once(mlp: Loaded, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The checked-in fixture stays representative: today's compiler loads the same weights
    (names and shapes as the fixture declares them), each exactly once. It puts them in one
    weight image (`weights.img`) where the fixture has a constant per layer, so the fixture
    also keeps the per-layer form covered."""
    from tests.inspect.make_fixture import compile_fixture

    fixture = mlp[0]
    shapes = {d.name[: -len(".w")]: d.shape for d in fixture.decls if d.name.endswith(".w")}
    fresh = loaded(compile_fixture(tmp_path / "mlp.cimasm"))
    _check_tiles_cover_weights(fresh, shapes)


def _check_tiles_cover_weights(
    program_loaded: Loaded, shapes: dict[str, tuple[int, int]] | None = None
) -> None:
    """Every macro tile is named `NAME.w[r0:r1, c0:c1]` and the tiles cover each weight
    exactly once. `shapes` gives the weights' shapes (default: the program's `NAME.w`)."""
    program, _, schedule = program_loaded
    if shapes is None:
        shapes = {d.name[: -len(".w")]: d.shape for d in program.decls if d.name.endswith(".w")}
    covered = {name: np.zeros(shape, int) for name, shape in shapes.items()}
    for p in macro_phases(program, schedule):
        m = re.fullmatch(r"(\w+)\.w\[(\d+):(\d+), (\d+):(\d+)\]", p.source.label)
        assert m, p.source.label
        name, r0, r1, c0, c1 = m[1], *map(int, m.groups()[1:])
        assert p.node.startswith(f"%{name} ")  # the tile belongs to the node that loads it
        wr0, wr1, wc0, wc1 = p.window
        assert (r1 - r0, c1 - c0) == (wr1 - wr0, wc1 - wc0)
        covered[name][r0:r1, c0:c1] += 1
    assert sorted(covered) == ["linear", "linear_1"]
    assert all((grid == 1).all() for grid in covered.values())


def test_phases_tile_time_and_own_every_mvm(mlp: Loaded) -> None:
    program, arch, schedule = mlp
    phases = macro_phases(program, schedule)
    by_macro: dict[tuple[int, int], list] = {}
    for p in phases:
        by_macro.setdefault((p.core, p.macro), []).append(p)
    for ps in by_macro.values():
        assert [p.index for p in ps] == list(range(len(ps)))
        assert all(a.end == b.start for a, b in zip(ps, ps[1:], strict=False))
        assert ps[-1].end == schedule.makespan
        for p in ps:
            assert all(p.start <= u.start < p.end for u in p.uses)
            assert 0 < p.cells <= arch.macro_bytes
    mvms = Counter((i.core, i.pc) for i in schedule.items if i.instr.opcode.startswith("mvm"))
    used = Counter((p.core, u.pc) for p in phases for u in p.uses)
    assert used == mvms


def test_chip_phases_hold_the_latest_tile_of_each_macro(mlp: Loaded) -> None:
    program, _, schedule = mlp
    phases = macro_phases(program, schedule)
    chips = chip_phases(phases, schedule.makespan)
    assert len(chips) >= 2 and chips[-1].end == schedule.makespan
    for a, b in zip(chips, chips[1:], strict=False):
        assert a.end == b.start
    for chip in chips:
        for (core, macro), p in chip.live.items():
            assert (p.core, p.macro) == (core, macro) and p.start < chip.end
    last = chips[-1].live
    for p in phases:
        later = [q for q in phases if (q.core, q.macro) == (p.core, p.macro) and q.start > p.start]
        if not later:
            assert last[(p.core, p.macro)] == p  # the final map shows every macro's last tile


def test_macro_spec_errors_name_what_exists(mlp: Loaded) -> None:
    program, arch, _ = mlp
    assert parse_macro_spec("1.m1", program, arch) == (1, 1)
    for text, message in [
        ("0", "write CORE.MACRO"),
        ("a.1", "write CORE.MACRO"),
        ("7.0", r"uses cores \[0, 1\]"),
        ("0.4", "macros 0..3"),
    ]:
        with pytest.raises(CimcError, match=message):
            parse_macro_spec(text, program, arch)


def test_mload_sources_are_mloads(mlp: Loaded) -> None:
    """Guard for trace_source: every phase starts at an mload of its macro."""
    program, _, schedule = mlp
    starts = {
        (i.core, i.start, spec_of(i.instr).macro(i.instr)[0].index)
        for i in schedule.items
        if i.instr.opcode.startswith("mload")
    }
    assert {(p.core, p.start, p.macro) for p in macro_phases(program, schedule)} == starts


SOURCES = """\
.arch tiny
.const   w               gb[0x0]         i8[16x32]
.region  kv              gb[0x200]       512

.core 0
  mload    m0, gb[w+0x20]:i8[8x32]
  dma      sp[0x0]:i8[8x16], gb[kv+0x10]:i8[8x16/32]
  mload.t  m1, sp[0x0]:i8[8x16]
  fill     sp[0x100]:i8[4x4], 3
  mload    m2, sp[0x100]:i8[4x4]
  mload    m3, sp[0x200]:i8[2x2]
  mvm      sp[0x300]:i32[1x32], sp[0x400]:i8[1x8], m0
  halt
"""


def test_tile_sources_of_every_kind(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "sources.cimasm"
    path.write_text(SOURCES)
    program, _, schedule = loaded(path)
    phases = {p.macro: p for p in macro_phases(program, schedule)}
    assert phases[0].source.label == "w[1:9, 0:32]" and phases[0].source.kind == "const"
    assert phases[1].transposed and phases[1].source.label == "kv+0x10"
    assert phases[1].source.kind == "region"
    assert phases[2].source.label == "computed on core 0 by fill (line 9)"
    assert phases[3].source.label == "sp never written before (zeros)"
    assert [u.line for u in phases[0].uses] == [12] and phases[0].cells == 8 * 32
    assert phases[1].uses == () and phases[1].cells == 16 * 8
