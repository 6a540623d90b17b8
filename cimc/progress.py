"""Progress display for long work (import, calibration, compile passes, long runs).

`progress(...)` gives a `Tracker`; on a terminal it draws a rich progress bar on stderr that
disappears when done. It is silent (a no-op tracker) when stderr is not a terminal (pipes,
CI logs, tests) or when the user passed `--quiet`, so output stays byte-for-byte clean.

    with progress("interpreting", total=len(instrs), quiet=args.quiet) as bar:
        for instr in instrs:
            ...
            bar.advance()
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Tracker:
    """Advances one task; the base class draws nothing (the quiet / not-a-terminal case)."""

    def advance(self, steps: int = 1) -> None:
        del steps

    def describe(self, text: str) -> None:
        """Change the label (e.g. the name of the pass now running)."""
        del text


class _RichTracker(Tracker):
    def __init__(self, bar: Progress, task: int) -> None:
        self._bar = bar
        self._task = task

    def advance(self, steps: int = 1) -> None:
        self._bar.advance(self._task, steps)  # type: ignore[arg-type]

    def describe(self, text: str) -> None:
        self._bar.update(self._task, description=text)  # type: ignore[arg-type]


def enabled(quiet: bool = False, stream: TextIO | None = None) -> bool:
    """Draw only for a person watching: not quiet, and the stream is a terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return not quiet and callable(isatty) and bool(isatty())


@contextmanager
def progress(
    description: str, total: int | None = None, quiet: bool = False, stream: TextIO | None = None
) -> Iterator[Tracker]:
    """A tracker for one piece of work of `total` steps (None: unknown, a spinner-like bar)."""
    stream = sys.stderr if stream is None else stream
    if not enabled(quiet, stream):
        yield Tracker()
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(file=stream), transient=True) as bar:
        yield _RichTracker(bar, bar.add_task(description, total=total))


def add_quiet_option(parser: argparse.ArgumentParser) -> None:
    """`--quiet`: no progress display (it is also off whenever stderr is not a terminal)."""
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress display")
