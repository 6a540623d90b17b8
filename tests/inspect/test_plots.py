"""`cimc report --plot DIR` PNGs and `--trace` JSON, produced on small programs and read back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cimc.cli import main
from cimc.commands.program_files import load_inputs
from cimc.inspect.macros import chip_phases, macro_phases
from cimc.inspect.nodes import node_stats
from cimc.machine.interpreter import run_program
from cimc.plots.figures import (
    DPI,
    MIN_FONT,
    PLOT_FILES,
    PLOTS,
    band_edges,
    layers_figure,
    occupancy_figure,
    occupancy_grid,
    point_style,
    roofline_figure,
    roofline_points,
)
from tests.inspect.conftest import DOUBLE, MATMUL, MLP, SOFTMAX, Loaded, loaded


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"), dtype=np.int64)


def _not_blank(pixels: np.ndarray) -> None:
    assert pixels.var() > 0
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 20  # more than a frame and a few labels


@pytest.fixture
def softmax() -> Loaded:
    return loaded(SOFTMAX)


def _expected_sizes(loaded_program: Loaded) -> dict[str, tuple[int, int]]:
    """Pixel sizes of the figures, from the figure objects (built, not drawn: cheap)."""
    import matplotlib.pyplot as plt

    program, arch, schedule = loaded_program
    stats = node_stats(schedule)
    chips = chip_phases(macro_phases(program, schedule), schedule.makespan)
    figures = {
        "occupancy.png": occupancy_figure(chips, arch, "t"),
        "layers.png": layers_figure(stats, "t"),
        "roofline.png": roofline_figure(stats, arch, "t"),
    }
    sizes = {}
    for name, fig in figures.items():
        width, height = (int(round(v)) for v in fig.get_size_inches() * DPI)
        sizes[name] = (width, height)
        plt.close(fig)
    return sizes


def test_report_plot_writes_three_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mlp: Loaded
) -> None:
    out = tmp_path / "plots" / "mlp"  # created, parents too
    code = main(["report", str(MLP), "--plot", str(out), "--json"])
    stdout, err = capsys.readouterr()
    assert code == 0
    assert json.loads(stdout)["arch"] == "tiny"  # the JSON on stdout is untouched
    assert sorted(p.name for p in out.iterdir()) == sorted(PLOT_FILES)
    assert err.count("wrote ") == 3
    expected = _expected_sizes(mlp)
    assert expected["roofline.png"] == (12 * DPI, 6 * DPI)
    assert expected["layers.png"][0] == 12 * DPI
    for name in PLOT_FILES:
        pixels = _pixels(out / name)
        _not_blank(pixels)
        assert (pixels.shape[1], pixels.shape[0]) == expected[name], name


def test_figures_of_a_program_without_macs(softmax: Loaded) -> None:
    """Nothing to place: the figures still build, saying so in their titles."""
    sizes = _expected_sizes(softmax)
    assert sizes["roofline.png"] == (12 * DPI, 6 * DPI)
    assert roofline_points(node_stats(softmax[2])) == []


def test_occupancy_grid_is_the_fraction_of_cells_in_use(mlp: Loaded) -> None:
    program, arch, schedule = mlp
    chips = chip_phases(macro_phases(program, schedule), schedule.makespan)
    first = occupancy_grid(chips[0], [0, 1], arch)
    assert first.shape == (2, arch.core.macros)
    for (core, macro), p in chips[0].live.items():
        r0, r1, c0, c1 = p.window
        assert first[core, macro] >= (r1 - r0) * (c1 - c0) / arch.macro_bytes > 0
    assert ((first >= 0) & (first <= 1)).all() and (first == 0).any()  # core 1 uses 2 macros


def test_roofline_places_the_nodes_with_macs(mlp: Loaded) -> None:
    _, arch, schedule = mlp
    points = {name.split(" ")[0]: (x, y) for name, x, y in roofline_points(node_stats(schedule))}
    assert sorted(points) == ["%linear", "%linear_1"]  # relu does no MACs
    peak = arch.chip.cores * arch.core.macros * arch.macro_bytes * 2 / arch.mvm_cycles_per_vector
    for intensity, achieved in points.values():
        assert achieved <= min(peak, intensity * arch.dram_bytes_per_cycle)  # under the roof
        assert intensity > 1  # each weight byte is used by 7 input rows


def test_report_plot_refuses_a_file_as_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = main(["report", str(DOUBLE), "--plot", str(blocker / "sub")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot create the plot folder" in err


@pytest.mark.parametrize("path", [MATMUL, DOUBLE], ids=lambda p: p.stem)
def test_trace_has_one_event_per_executed_instruction(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], path: Path
) -> None:
    trace = tmp_path / "t.json"
    assert main(["report", str(path), "--trace", str(trace)]) == 0
    capsys.readouterr()
    events = json.loads(trace.read_text())["traceEvents"]
    program, arch, _ = loaded(path)
    result = run_program(program, arch, load_inputs(str(path.with_suffix(".inputs.npz"))))
    on_cores = [e for e in events if e["ph"] == "X" and e["pid"] < arch.chip.cores]
    assert len(on_cores) == result.stats.steps
    lines = sorted(e["args"]["line"] for e in on_cores)
    assert lines == sorted(i.line for s in program.cores for i in s.instrs)
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in on_cores)


RESIDENT = """\
.arch tiny
.core 0
  fill     sp[0x0]:i8[32x32], 1                         ; %w
  mload    m0, sp[0x0]:i8[32x32]                        ; %w
  fill     sp[0x400]:i8[8x32], 2                        ; %x
  mvm      sp[0x800]:i32[8x32], sp[0x400]:i8[8x32], m0  ; %mm
  halt
"""


def test_roofline_puts_nodes_without_dram_bytes_at_the_edge(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    path = tmp_path / "resident.cimasm"
    path.write_text(RESIDENT)
    _, arch, schedule = loaded(path)
    stats = node_stats(schedule)
    assert roofline_points(stats) == []  # infinite intensity: not a regular point
    fig = roofline_figure(stats, arch, "t")
    ax = fig.axes[0]
    assert "(1 nodes with MACs)" in ax.get_title()
    assert len(ax.texts) == 0  # no label on the points: the legend table names them
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    assert names[-1] == "%mm (no DRAM/flash bytes)"
    plt.close(fig)


def test_roofline_names_every_point_in_a_legend_with_distinct_styles(mlp: Loaded) -> None:
    import matplotlib.pyplot as plt

    _, arch, schedule = mlp
    stats = node_stats(schedule)
    fig = roofline_figure(stats, arch, "t")
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    points = roofline_points(stats)
    assert [n for n in names if n.startswith("%")] == [p[0] for p in points]
    assert len(ax.texts) == 0
    assert len({point_style(k) for k in range(160)}) == 160  # colour x marker pairs differ
    plt.close(fig)


def test_occupancy_bands_are_as_tall_as_their_phases(mlp: Loaded) -> None:
    program, _, schedule = mlp
    chips = chip_phases(macro_phases(program, schedule), schedule.makespan)
    edges = band_edges(chips, 2)
    assert len(edges) == 2 * len(chips) + 1
    for k, ph in enumerate(chips):
        low, high = edges[2 * k], edges[2 * k + 2]
        assert (low, high) == (ph.start, max(ph.end, ph.start + 1))  # the phase's own span
    durations = [ph.end - ph.start for ph in chips]
    assert len(set(durations)) > 1  # unequal phases: equal bands would be wrong here


def test_fonts_are_readable_and_formats_are_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mlp: Loaded
) -> None:
    import matplotlib.pyplot as plt

    program, arch, schedule = mlp
    stats = node_stats(schedule)
    chips = chip_phases(macro_phases(program, schedule), schedule.makespan)
    for fig in (occupancy_figure(chips, arch, "t"), layers_figure(stats, "t"),
                roofline_figure(stats, arch, "t")):  # fmt: skip
        sizes = [t.get_fontsize() for t in fig.findobj(plt.Text) if t.get_text()]
        assert sizes and min(sizes) >= MIN_FONT
        plt.close(fig)
    for fmt, magic in (("svg", b"<?xml"), ("pdf", b"%PDF")):
        files = []
        for k in range(2):  # twice: the same bytes (no date, no random ids)
            out = tmp_path / f"{fmt}{k}"
            assert main(["report", str(MLP), "--plot", str(out), "--plot-format", fmt, "-q"]) == 0
            assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.{fmt}" for n in PLOTS)
            files.append({p.name: p.read_bytes() for p in out.iterdir()})
        assert files[0] == files[1]
        assert all(data.startswith(magic) for data in files[0].values())
    capsys.readouterr()


def test_packed_int4_tiles_are_marked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A phase whose cells an mvm.i4 reads holds two weights a cell: inspect says so."""
    from cimc.cli import main
    from cimc.inspect.macros import macro_phases
    from cimc.machine.arch import load_arch
    from cimc.machine.parser import parse_program
    from cimc.machine.schedule import simulate
    from tests.machine.test_mvm_i4 import PROGRAM

    program = parse_program(PROGRAM, str(tmp_path / "i4.cimasm"))
    (phase,) = macro_phases(program, simulate(program, load_arch("tiny")))
    assert phase.packed and phase.weights == 2 * phase.cells == 2 * 6 * 4
    assert phase.as_dict()["weight_bits"] == 4
    (tmp_path / "i4.cimasm").write_text(PROGRAM)
    assert main(["inspect", str(tmp_path / "i4.cimasm")]) == 0
    out = capsys.readouterr().out
    assert " A:" in out and "X: = packed int4 weights, two a cell" in out
