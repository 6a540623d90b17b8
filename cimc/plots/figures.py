"""The figures of `cimc report --plot DIR` (`--plot-format png|svg|pdf`).

- occupancy: macro occupancy per chip phase, time running down: each phase a band as tall
  as it lasts, one row per core, a column per macro (colour = fraction of the macro's cells
  holding a live tile; the label names the node where the cell is tall enough for it);
- layers: busy cycles and energy of each graph node, as horizontal bars;
- roofline: each node with MACs at (ops per DRAM/flash byte, achieved ops per cycle)
  under the chip's peak-compute and DRAM-bandwidth roofs; points are numbered, and a
  legend table beside the axes names them (labels on the points would overlap).
Fonts are at least MIN_FONT points.
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

PLOTS = ("occupancy", "layers", "roofline")
FORMATS = ("png", "svg", "pdf")
PLOT_FILES = tuple(f"{name}.png" for name in PLOTS)  # the default format's files
DPI = 150
MIN_FONT = 8
MAX_PHASES = 24  # small multiples beyond this are unreadable: the rest are summarized
MAX_BARS = 40
MAX_LABELLED_CELLS = 256


def write_plots(
    program: Program, arch: Arch, schedule: Schedule, outdir: str | Path, fmt: str = "png"
) -> list[Path]:
    """Write every figure into `outdir` (created if missing) as `fmt` files; the paths."""
    if fmt not in FORMATS:
        raise CimcError(f"unknown plot format {fmt!r}; use one of {', '.join(FORMATS)}", fmt)
    out = Path(outdir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CimcError(f"cannot create the plot folder: {e.strerror or e}", str(out)) from None
    stats = node_stats(schedule)
    chips = chip_phases(macro_phases(program, schedule), schedule.makespan)
    title = Path(program.source_name).name
    figures = {
        "occupancy": occupancy_figure(chips, arch, title),
        "layers": layers_figure(stats, title),
        "roofline": roofline_figure(stats, arch, title),
    }
    return [_save(fig, out / f"{name}.{fmt}") for name, fig in figures.items()]


def _save(fig: Figure, path: Path) -> Path:
    # no creation date in svg/pdf: the same program gives the same bytes
    metadata = {".svg": {"Date": None}, ".pdf": {"CreationDate": None}}.get(path.suffix)
    try:
        with plt.rc_context({"svg.hashsalt": "cimc"}):  # svg ids without randomness
            fig.savefig(path, dpi=DPI, metadata=metadata)
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
    """One heatmap, time running down: each phase a band as tall as it lasts (its cycles),
    split into a row per core, a column per macro. One axes, not small multiples, so a
    program with many phases still draws quickly."""
    cores = sorted({c for ph in chips for c, _ in ph.live}) or [0]
    shown = chips[:MAX_PHASES]
    grid = (
        np.vstack([occupancy_grid(ph, cores, arch) for ph in shown])
        if shown
        else np.zeros((len(cores), arch.core.macros))
    )
    edges = band_edges(shown, len(cores))
    fig, ax = plt.subplots(figsize=(4.0 + 0.4 * min(arch.core.macros, 32), 7.0), layout="tight")
    image = ax.pcolormesh(
        np.arange(arch.core.macros + 1) - 0.5, edges, grid, vmin=0.0, vmax=1.0, cmap="viridis"
    )
    ax.set_ylim(edges[-1], edges[0])  # time runs down
    ax.set_ylabel("cycles (each phase a band as long as it lasts, a row per core)")
    for ph in shown[1:]:
        ax.axhline(ph.start, color="white", linewidth=1.5)
    step = max(1, arch.core.macros // 32)
    ticks = range(0, arch.core.macros, step)
    ax.set_xticks(ticks, [str(m) for m in ticks], fontsize=MIN_FONT)
    ax.tick_params(axis="y", labelsize=MIN_FONT)
    ax.set_xlabel("macro")
    more = f" (first {MAX_PHASES} of {len(chips)} phases)" if len(chips) > MAX_PHASES else ""
    if not chips:
        more = " (no mload: macros unused)"
    ax.set_title(f"{title}: macro occupancy per phase{more}", fontsize=10)
    fig.colorbar(image, ax=ax, label="fraction of cells in use")
    if grid.size <= MAX_LABELLED_CELLS:
        _label_cells(ax, fig, shown, cores, edges, grid)
    return fig


def band_edges(phases: tuple[ChipPhase, ...], cores: int) -> np.ndarray:
    """Row boundaries in cycles: each phase's span cut into `cores` equal rows (a phase
    of no cycles still gets a sliver, so every row exists)."""
    if not phases:
        return np.arange(cores + 1, dtype=float)
    edges = [float(phases[0].start)]
    for ph in phases:
        start = max(float(ph.start), edges[-1])
        end = max(float(ph.end), start + 1.0)
        edges += list(np.linspace(start, end, cores + 1)[1:])
    return np.asarray(edges)


def _label_cells(
    ax: Axes,
    fig: Figure,
    shown: tuple[ChipPhase, ...],
    cores: list[int],
    edges: np.ndarray,
    grid: np.ndarray,
) -> None:
    """Name the node whose tile each macro holds (the colour alone says only how full),
    where the row is tall enough for a readable label."""
    span = edges[-1] - edges[0]
    points_per_cycle = fig.get_size_inches()[1] * 72 * 0.7 / span if span else 0.0
    for band, ph in enumerate(shown):
        for (core, macro), p in ph.live.items():
            row = band * len(cores) + cores.index(core)
            low, high = edges[row], edges[row + 1]
            if (high - low) * points_per_cycle < MIN_FONT + 2:
                continue
            name = p.node.split(" ")[0].lstrip("%")[:10] + ("\nint4" if p.packed else "")
            colour = "black" if grid[row, macro] > 0.6 else "white"  # viridis: light at 1
            ax.text(macro, (low + high) / 2, name, ha="center", va="center",
                    fontsize=MIN_FONT, color=colour)  # fmt: skip


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
    left.set_yticks(y, names, fontsize=MIN_FONT)
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


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def point_style(k: int) -> tuple[object, str]:
    """The k-th point's (colour, marker): 20 colours x 8 markers, all pairs distinct."""
    return plt.get_cmap("tab20")(k % 20), MARKERS[(k // 20) % len(MARKERS)]


def roofline_figure(stats: tuple[NodeStats, ...], arch: Arch, title: str) -> Figure:
    macros = arch.chip.cores * arch.core.macros
    peak = macros * arch.macro_bytes * 2 / arch.mvm_cycles_per_vector  # ops per cycle
    bandwidth = arch.dram_bytes_per_cycle  # bytes per cycle
    points = roofline_points(stats)
    xs = [p[1] for p in points]
    lo = min([peak / bandwidth / 100, *xs]) / 2
    hi = max([peak / bandwidth * 100, *xs]) * 2
    x = np.geomspace(lo, hi, 200)
    fig, ax = plt.subplots(figsize=(12, 6), layout="tight")
    ax.loglog(x, np.minimum(peak, x * bandwidth), color="black", label="attainable")
    ax.axhline(peak, color="tab:red", linestyle="--", label=f"peak compute {peak:,.0f} ops/cycle")
    ax.loglog(
        x, x * bandwidth, color="tab:blue", linestyle=":", label=f"DRAM {bandwidth:.2f} B/cycle"
    )
    resident = [
        (s.name, 2 * s.macs / s.span_cycles)
        for s in stats
        if s.macs and not s.offchip_bytes and s.span_cycles
    ]
    placed = [*points, *((n, hi, y) for n, y in resident)]  # resident: at the right edge
    for k, (name, intensity, achieved) in enumerate(placed):
        colour, marker = point_style(k)
        label = _short(name, 60) + (" (no DRAM/flash bytes)" if k >= len(points) else "")
        ax.scatter([intensity], [achieved], s=60, color=colour, marker=marker, zorder=3,
                   edgecolors="black", linewidths=0.5, label=label)  # fmt: skip
    ax.set_xlabel("arithmetic intensity (ops per DRAM/flash byte; right edge: none)")
    ax.set_ylabel("achieved ops per cycle (2 x MACs / node span)")
    ax.set_title(f"{title}: roofline on '{arch.name}' ({len(placed)} nodes with MACs)", fontsize=10)
    # the legend is the table of names, beside the axes: no label lies on the points
    ax.legend(fontsize=MIN_FONT, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    ax.grid(True, which="major", alpha=0.3)
    return fig
