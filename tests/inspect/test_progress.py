"""cimc/progress.py: a bar on a terminal, nothing otherwise."""

from __future__ import annotations

import argparse
import io

from cimc.progress import Tracker, add_quiet_option, enabled, progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _work(stream: io.StringIO, quiet: bool = False) -> Tracker:
    with progress("compiling", total=5, quiet=quiet, stream=stream) as bar:
        for _ in range(5):
            bar.advance()
        bar.describe("done")
    return bar


def test_silent_when_not_a_terminal() -> None:
    stream = io.StringIO()
    bar = _work(stream)
    assert stream.getvalue() == "" and type(bar) is Tracker
    assert not enabled(stream=stream)


def test_silent_when_quiet_even_on_a_terminal() -> None:
    stream = _Terminal()
    assert type(_work(stream, quiet=True)) is Tracker and stream.getvalue() == ""


def test_draws_on_a_terminal() -> None:
    stream = _Terminal()
    bar = _work(stream)
    assert type(bar) is not Tracker
    assert stream.getvalue() != ""  # rich drew (and, transient, erased) the bar


def test_quiet_option() -> None:
    parser = argparse.ArgumentParser()
    add_quiet_option(parser)
    assert parser.parse_args(["-q"]).quiet and not parser.parse_args([]).quiet
