"""The figures of a sweep (matplotlib, Agg backend), written beside its table:

- pareto.png: every completed trial at (latency, energy), coloured by chip area; the
  latency x energy Pareto front joined by a line and its points ringed;
- sensitivity.png: per knob, the share of each objective's variance its values explain
  (eta^2, cimc/sweep/outputs.py);
- knobs.png: one panel per knob, each objective of every trial over the knob's values,
  relative to the objective's best trial (1.0 = best).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless, deterministic rendering

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cimc.errors import CimcError  # noqa: E402
from cimc.sweep.outputs import Row, pareto_front  # noqa: E402
from cimc.sweep.trial import OBJECTIVES  # noqa: E402

DPI = 150
FONT = 9
MARKERS = ("o", "s", "^", "D", "v")
MAX_TICKS = 8  # a numeric knob with more distinct values is drawn on a numeric axis


def write_sweep_plots(
    rows: list[Row],
    knobs: list[str],
    objectives: tuple[str, ...],
    table: dict[str, dict[str, float]],
    outdir: Path,
    title: str,
) -> list[Path]:
    with plt.rc_context({"font.size": FONT}):
        figures = {
            "pareto": pareto_figure(rows, title),
            "sensitivity": sensitivity_figure(table, knobs, title),
            "knobs": knobs_figure(rows, knobs, objectives, title),
        }
    return [_save(fig, outdir / f"{name}.png") for name, fig in figures.items()]


def pareto_figure(rows: list[Row], title: str) -> Figure:
    done = [r for r in rows if r.ok]
    fig, ax = plt.subplots(figsize=(7, 5), layout="constrained")
    failed = len(rows) - len(done)
    ax.set_title(f"{title}: {len(done)} trials ({failed} failed)")
    ax.set_xlabel("latency (us)")
    ax.set_ylabel("energy (uJ, dynamic + leakage)")
    if not done:
        ax.text(0.5, 0.5, "no completed trial", ha="center", transform=ax.transAxes)
        return fig
    x = np.array([r.metrics["latency_us"] for r in done])
    y = np.array([r.metrics["energy_uj"] for r in done])
    area = np.array([r.metrics["area_mm2"] for r in done])
    points = ax.scatter(x, y, c=area, cmap="viridis", s=28, zorder=2)
    fig.colorbar(points, ax=ax, label="area (mm2)")
    front = sorted(pareto_front(done, ("latency", "energy")), key=lambda r: r.metrics["latency_us"])
    fx = [r.metrics["latency_us"] for r in front]
    fy = [r.metrics["energy_uj"] for r in front]
    ax.plot(
        fx,
        fy,
        color="crimson",
        lw=1.2,
        zorder=1,
        drawstyle="steps-post",
        label=f"Pareto front ({len(front)} trials)",
    )
    ax.scatter(fx, fy, s=90, facecolors="none", edgecolors="crimson", zorder=3)
    labels: dict[tuple[float, float], list[str]] = {}
    for r in front:  # trials at the same point share one label
        xy = (r.metrics["latency_us"], r.metrics["energy_uj"])
        labels.setdefault(xy, []).append(str(r.number))
    for xy, numbers in labels.items():
        text = "#" + ",".join(numbers[:6]) + (",..." if len(numbers) > 6 else "")
        ax.annotate(text, xy, textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    return fig


def sensitivity_figure(table: dict[str, dict[str, float]], knobs: list[str], title: str) -> Figure:
    fig, ax = plt.subplots(
        figsize=(7, 1.2 + 0.3 * len(knobs) * max(1, len(table))), layout="constrained"
    )
    height = 0.8 / max(1, len(table))
    ys = np.arange(len(knobs))
    for i, (objective, by_knob) in enumerate(table.items()):
        ax.barh(ys + i * height, [by_knob[k] for k in knobs], height, label=objective)
    ax.set_yticks(ys + height * (len(table) - 1) / 2, knobs)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the objective's variance the knob's values explain (eta^2)")
    ax.set_title(f"{title}: knob sensitivity")
    ax.legend(loc="lower right")
    return fig


def knobs_figure(
    rows: list[Row], knobs: list[str], objectives: tuple[str, ...], title: str
) -> Figure:
    done = [r for r in rows if r.ok]
    fig, axes = plt.subplots(
        len(knobs), 1, figsize=(7, 0.4 + 2.4 * len(knobs)), layout="constrained", squeeze=False
    )
    for ax, knob in zip(axes[:, 0], knobs, strict=True):
        levels = sorted({r.params[knob] for r in done}, key=_order)
        continuous = len(levels) > MAX_TICKS and all(isinstance(v, int | float) for v in levels)
        position = {v: (float(v) if continuous else i) for i, v in enumerate(levels)}
        shift = 0.0 if continuous else 0.08  # categories: objectives side by side
        for j, objective in enumerate(objectives):
            values = np.array([r.metrics[OBJECTIVES[objective]] for r in done])
            best = values.min() if len(values) else 1.0
            xs = [position[r.params[knob]] + (j - (len(objectives) - 1) / 2) * shift for r in done]
            ax.scatter(
                xs,
                values / best if best else values,
                s=16,
                marker=MARKERS[j % len(MARKERS)],
                label=objective,
            )
        if not continuous:
            ax.set_xticks(range(len(levels)), [_label(v) for v in levels])
        ax.set_xlabel(knob)
        ax.set_ylabel("relative to best")
        ax.grid(alpha=0.3)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=len(objectives))
    fig.suptitle(f"{title}: objectives over each knob's values")
    return fig


def _order(value: object) -> tuple[int, float, str]:
    if isinstance(value, int | float):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _label(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _save(fig: Figure, path: Path) -> Path:
    try:
        fig.savefig(path, dpi=DPI)
    except OSError as e:
        raise CimcError(f"cannot write the plot: {e.strerror or e}", str(path)) from None
    finally:
        plt.close(fig)
    return path
