"""The figures of `cimc report --plot DIR`.

- occupancy.png: macro occupancy per chip phase, one cores x macros heatmap per phase
  (colour = fraction of the macro's cells holding a live tile; the label names the node);
- layers.png: busy cycles and energy of each graph node, as horizontal bars;
- roofline.png: each node with MACs at (ops per DRAM/flash byte, achieved ops per cycle)
  under the chip's peak-compute and DRAM-bandwidth roofs.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless, deterministic rendering

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cimc.errors import CimcError  # noqa: E402
from cimc.inspect.macros import ChipPhase, chip_phases, macro_phases  # noqa: E402
from cimc.inspect.nodes import NodeStats, node_stats  # noqa: E402
from cimc.machine.arch import Arch  # noqa: E402
from cimc.machine.program import Program  # noqa: E402
from cimc.machine.schedule import Schedule  # noqa: E402

PLOT_FILES = ("occupancy.png", "layers.png", "roofline.png")
DPI = 100
MAX_PHASES = 24  # small multiples beyond this are unreadable: the rest are summarized
MAX_BARS = 40
MAX_LABELLED_CELLS = 256


def write_plots(program: Program, arch: Arch, schedule: Schedule, outdir: str | Path) -> list[Path]:
    """Write every figure into `outdir` (created if missing) and return the paths."""
    out = Path(outdir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CimcError(f"cannot create the plot folder: {e.strerror or e}", str(out)) from None
    stats = node_stats(schedule)
    chips = chip_phases(macro_phases(program, schedule), schedule.makespan)
    title = Path(program.source_name).name
    figures = {
        "occupancy.png": occupancy_figure(chips, arch, title),
        "layers.png": layers_figure(stats, title),
        "roofline.png": roofline_figure(stats, arch, title),
    }
    paths = []
    for name, fig in figures.items():
        paths.append(_save(fig, out / name))
    return paths


def _save(fig: Figure, path: Path) -> Path:
    try:
        fig.savefig(path, dpi=DPI)
    except OSError as e:
        raise CimcError(f"cannot write the plot: {e.strerror or e}", str(path)) from None
    finally:
        plt.close(fig)
    return path


def occupancy_grid(phase: ChipPhase, cores: list[int], arch: Arch) -> np.ndarray:
    """Fraction of cells in use, cores x macros, during one chip phase."""
    grid = np.zeros((len(cores), arch.core.macros))
    for (core, macro), p in phase.live.items():
        grid[cores.index(core), macro] = p.cells / arch.macro_bytes
    return grid


def occupancy_figure(chips: tuple[ChipPhase, ...], arch: Arch, title: str) -> Figure:
    """One heatmap: a band of rows (one per core) for each phase, a column per macro. One
    axes, not small multiples, so a program with many phases still draws quickly."""
    cores = sorted({c for ph in chips for c, _ in ph.live}) or [0]
    shown = chips[:MAX_PHASES]
    grid = (
        np.vstack([occupancy_grid(ph, cores, arch) for ph in shown])
        if shown
        else np.zeros((len(cores), arch.core.macros))
    )
    height = 1.8 + 0.22 * grid.shape[0]
    fig, ax = plt.subplots(figsize=(3.0 + 0.35 * min(arch.core.macros, 32), height), layout="tight")
    image = ax.imshow(
        grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto", interpolation="nearest"
    )
    labels = [f"phase {ph.index} core {c}" for ph in shown for c in cores] or ["core 0"]
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    for band in range(1, len(shown)):
        ax.axhline(band * len(cores) - 0.5, color="white", linewidth=1.5)
    step = max(1, arch.core.macros // 32)
    ticks = range(0, arch.core.macros, step)
    ax.set_xticks(ticks, [str(m) for m in ticks], fontsize=6)
    ax.set_xlabel("macro")
    more = f" (first {MAX_PHASES} of {len(chips)} phases)" if len(chips) > MAX_PHASES else ""
    if not chips:
        more = " (no mload: macros unused)"
    ax.set_title(f"{title}: macro occupancy per phase{more}", fontsize=9)
    fig.colorbar(image, ax=ax, label="fraction of cells in use")
    if grid.size <= MAX_LABELLED_CELLS:
        _label_cells(ax, shown, cores)
    return fig


def _label_cells(ax: Axes, shown: tuple[ChipPhase, ...], cores: list[int]) -> None:
    """Name the node whose tile each macro holds (the colour alone says only how full)."""
    for band, ph in enumerate(shown):
        for (core, macro), p in ph.live.items():
            row = band * len(cores) + cores.index(core)
            name = p.node.split(" ")[0].lstrip("%")[:10] + ("\nint4" if p.packed else "")
            ax.text(macro, row, name, ha="center", va="center", fontsize=5, color="grey")


def layers_figure(stats: tuple[NodeStats, ...], title: str) -> Figure:
    """Busy cycles and energy per node, the most expensive MAX_BARS nodes in run order."""
    top = sorted(stats, key=lambda s: -s.energy_pj)[:MAX_BARS]
    rows = sorted(top, key=lambda s: (s.first_start, s.name))
    names = [_short(s.name) for s in rows]
    y = np.arange(len(rows))
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(12, 1.5 + 0.28 * max(1, len(rows))), sharey=True, constrained_layout=True
    )
    left.barh(y, [s.busy_cycles for s in rows], color="tab:blue")
    left.set_xlabel("busy cycles (sum over units)")
    right.barh(y, [s.energy_pj / 1e3 for s in rows], color="tab:orange")
    right.set_xlabel("energy (nJ)")
    left.set_yticks(y, names, fontsize=7)
    left.invert_yaxis()  # first node on top
    shown = f"top {len(rows)} of {len(stats)} nodes by energy" if len(stats) > len(rows) else ""
    fig.suptitle(f"{title}: latency and energy per node {shown}".strip(), fontsize=10)
    return fig


def _short(name: str, limit: int = 40) -> str:
    return name if len(name) <= limit else name[: limit - 3] + "..."


def roofline_points(stats: tuple[NodeStats, ...]) -> list[tuple[str, float, float]]:
    """(node, ops per off-chip byte, achieved ops per cycle) of nodes that do MACs and move
    off-chip bytes (the others have no place on a log-log roofline)."""
    return [
        (s.name, 2 * s.macs / s.offchip_bytes, 2 * s.macs / s.span_cycles)
        for s in stats
        if s.macs and s.offchip_bytes and s.span_cycles
    ]


def roofline_figure(stats: tuple[NodeStats, ...], arch: Arch, title: str) -> Figure:
    macros = arch.chip.cores * arch.core.macros
    peak = macros * arch.macro_bytes * 2 / arch.mvm_cycles_per_vector  # ops per cycle
    bandwidth = arch.dram_bytes_per_cycle  # bytes per cycle
    points = roofline_points(stats)
    xs = [p[1] for p in points]
    lo = min([peak / bandwidth / 100, *xs]) / 2
    hi = max([peak / bandwidth * 100, *xs]) * 2
    x = np.geomspace(lo, hi, 200)
    fig, ax = plt.subplots(figsize=(8, 6), layout="tight")
    ax.loglog(x, np.minimum(peak, x * bandwidth), color="black", label="attainable")
    ax.axhline(peak, color="tab:red", linestyle="--", label=f"peak compute {peak:,.0f} ops/cycle")
    ax.loglog(
        x, x * bandwidth, color="tab:blue", linestyle=":", label=f"DRAM {bandwidth:.2f} B/cycle"
    )
    if points:
        colours = plt.get_cmap("tab20")(np.arange(len(points)) % 20)
        ax.scatter(xs, [p[2] for p in points], s=24, c=colours, zorder=3)
    resident = [
        (s.name, 2 * s.macs / s.span_cycles)
        for s in stats
        if s.macs and not s.offchip_bytes and s.span_cycles
    ]
    if resident:  # infinite intensity: drawn at the right edge
        ax.scatter(
            [hi] * len(resident),
            [r[1] for r in resident],
            marker=">",
            color="grey",
            zorder=3,
            label="no DRAM/flash bytes (right edge)",
        )
    for name, intensity, achieved in [*points, *((n, hi, y) for n, y in resident)]:
        ax.annotate(
            _short(name, 24),
            (intensity, achieved),
            fontsize=6,
            xytext=(3, 3),
            textcoords="offset points",
        )
    ax.set_xlabel("arithmetic intensity (ops per DRAM/flash byte)")
    ax.set_ylabel("achieved ops per cycle (2 x MACs / node span)")
    placed = len(points) + len(resident)
    ax.set_title(f"{title}: roofline on '{arch.name}' ({placed} nodes with MACs)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, which="major", alpha=0.3)
    return fig
