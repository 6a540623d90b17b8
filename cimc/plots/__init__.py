"""PNG figures of a scheduled program (matplotlib, Agg backend: no display needed)."""

from cimc.plots.figures import PLOT_FILES, write_plots

__all__ = ["PLOT_FILES", "write_plots"]
