"""Progress display for long work (import, calibration, compile passes, long runs).

Library code reports progress without knowing who listens:

    report("calibrate", k, samples)                 # a no-op unless a display is active
    with poll("interpret", total, lambda: done()):  # a helper thread reads the count

The CLI wraps each command in `display(quiet=args.quiet)`. On a terminal, the first report
draws a rich progress bar on stderr; the bar disappears as soon as every task it shows is
complete, so results printed afterwards never mix with it. When stderr is not a terminal
(pipes, CI logs, tests) or with `--quiet`, nothing is drawn and stderr stays byte-for-byte
what it would be without this module.

Why a context variable and not a callback parameter: progress is a view of work done deep
inside the import, the quantize pass and the interpreter; threading a callback through
every layer would change a dozen signatures for a display concern.

`progress(...)` gives a `Tracker` for one loop the caller drives itself.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # rich is imported only when something is drawn
    from rich.progress import Progress, TaskID

Reporter = Callable[[str, int, int, str], None]
"""(task, done, total, note): `task` names the piece of work, `note` the current step."""

_REPORTER: ContextVar[Reporter | None] = ContextVar("cimc_progress_reporter", default=None)
POLL_SECONDS = 0.1


def report(task: str, done: int, total: int, note: str = "") -> None:
    """`done` of `total` steps of `task` are finished (nothing happens without a display)."""
    reporter = _REPORTER.get()
    if reporter is not None:
        reporter(task, done, total, note)


@contextmanager
def poll(task: str, total: int, read: Callable[[], int]) -> Iterator[None]:
    """Report `read()` of `total` every POLL_SECONDS from a helper thread while the body runs.

    The body pays nothing per step: the thread reads a counter the work keeps anyway (e.g.
    the interpreter's program counters). Without a display no thread is started.
    """
    reporter = _REPORTER.get()
    if reporter is None:
        yield
        return
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(POLL_SECONDS):
            reporter(task, min(read(), total), total, "")

    thread = threading.Thread(target=watch, name=f"cimc-progress-{task}", daemon=True)
    reporter(task, 0, total, "")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        reporter(task, total, total, "")


class _Display:
    """A rich bar that exists only while some task is unfinished."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._bar: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._open: set[str] = set()

    def __call__(self, task: str, done: int, total: int, note: str) -> None:
        with self._lock:
            label = f"{task}: {note}" if note else task
            bar, starting = (self._bar, False) if self._bar else (_rich_bar(self._stream), True)
            if task not in self._tasks:
                self._tasks[task] = bar.add_task(label, total=max(total, 1))
            bar.update(self._tasks[task], completed=done, total=max(total, 1), description=label)
            if starting:  # first drawn with its task in place
                self._bar = bar
                bar.start()
            if done < total:
                self._open.add(task)
            else:
                self._open.discard(task)
                if not self._open:
                    self._stop()

    def _stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        self._bar, self._tasks, self._open = None, {}, set()

    def close(self) -> None:
        with self._lock:
            self._stop()


@contextmanager
def display(quiet: bool = False, stream: TextIO | None = None) -> Iterator[None]:
    """Draw the reports made inside the block on `stream` (default stderr) when enabled."""
    stream = sys.stderr if stream is None else stream
    if not enabled(quiet, stream):
        yield
        return
    shown = _Display(stream)
    try:
        with listening(shown):
            yield
    finally:
        shown.close()


@contextmanager
def listening(reporter: Reporter) -> Iterator[None]:
    """Send the reports made inside the block to `reporter` (the display; tests record)."""
    token = _REPORTER.set(reporter)
    try:
        yield
    finally:
        _REPORTER.reset(token)


class Tracker:
    """Advances one task; the base class draws nothing (the quiet / not-a-terminal case)."""

    def advance(self, steps: int = 1) -> None:
        del steps

    def describe(self, text: str) -> None:
        """Change the label (e.g. the name of the pass now running)."""
        del text


class _RichTracker(Tracker):
    def __init__(self, bar: Progress, task: TaskID) -> None:
        self._bar = bar
        self._task = task

    def advance(self, steps: int = 1) -> None:
        self._bar.advance(self._task, steps)

    def describe(self, text: str) -> None:
        self._bar.update(self._task, description=text)


def enabled(quiet: bool = False, stream: TextIO | None = None) -> bool:
    """Draw only for a person watching: not quiet, and the stream is a terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return not quiet and callable(isatty) and bool(isatty())


@contextmanager
def progress(
    description: str, total: int | None = None, quiet: bool = False, stream: TextIO | None = None
) -> Iterator[Tracker]:
    """A tracker for one loop of `total` steps (None: unknown) that the caller advances."""
    stream = sys.stderr if stream is None else stream
    if not enabled(quiet, stream):
        yield Tracker()
        return
    bar = _rich_bar(stream)
    with bar:
        yield _RichTracker(bar, bar.add_task(description, total=total))


def _rich_bar(stream: TextIO) -> Progress:
    """A transient bar on `stream`; stdout is left alone (results must stay on stdout), while
    stderr writes made during the display are printed above the bar."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    return Progress(
        *columns,
        TimeElapsedColumn(),
        console=Console(file=stream),
        transient=True,
        redirect_stdout=False,
    )


def add_quiet_option(parser: argparse.ArgumentParser) -> None:
    """`--quiet`: no progress display (it is also off whenever stderr is not a terminal)."""
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress display")
