"""How the commands print tables and numbers: one console, one number format.

Tables take the terminal's width; a pipe or a file gets PIPE_WIDTH columns, wide enough
that a saved report neither wraps nor cuts a column. Numbers: integers with thousands
separators (`12,345`), floats to four significant digits (`0.1235`, `3.142e-05`), large
floats as integers.
"""

from __future__ import annotations

import sys

import numpy as np
from rich.console import Console
from rich.table import Table

PIPE_WIDTH = 160


def console() -> Console:
    width = None if sys.stdout.isatty() else PIPE_WIDTH
    return Console(width=width, highlight=False, markup=False)


def table(title: str, *columns: str, left: tuple[str, ...] = ()) -> Table:
    """A table whose title never wraps; the first column and those in `left` are
    left-aligned, the others (numbers) right-aligned."""
    t = Table(title=title, min_width=len(title) + 4)
    for i, column in enumerate(columns):
        t.add_column(column, justify="left" if i == 0 or column in left else "right")
    return t


def number(value: object) -> str:
    """The one way a command prints a number."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        v = float(value)
        if not np.isfinite(v) or v == 0:
            return "0" if v == 0 else str(v)
        if abs(v) >= 1e4:
            return f"{v:,.0f}"
        return f"{v:.4g}"
    return str(value)
