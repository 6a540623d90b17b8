"""Bad input never produces a traceback: `cimc run` / `cimc report` print one line naming the
place and the problem, and exit with code 2 (tests/badinput/cases.py lists the corpus)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.badinput.cases import CASES, Bad, compile_with_scratchpad, expected, no_marker

ROOT = Path(__file__).resolve().parents[2]


def cimc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cimc", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_corpus_is_large_and_ids_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) >= 40 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_located_line(case: Bad, work: Path) -> None:
    done = cimc(*case.setup(work))
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert re.search(expected(case, work), lines[0]), lines[0]
    assert done.returncode == 2, done.stderr
    assert no_marker(work)  # nothing was unpickled


@pytest.mark.slow  # three compiles in subprocesses; the corpus covers the message itself
def test_scratchpad_minimum_named_by_the_error_is_enough(tmp_path: Path) -> None:
    """The size the one-token error asks for compiles (the check is at compile time: the
    arch alone cannot know a model's widths)."""
    done = cimc(*compile_with_scratchpad(4096)(tmp_path))
    need = int(re.search(r"needs at least (\d+);", done.stderr).group(1))  # type: ignore[union-attr]
    assert 4096 < need <= 65536, done.stderr
    done = cimc(*compile_with_scratchpad(need)(tmp_path))
    assert done.returncode == 0, done.stderr
    done = cimc(*compile_with_scratchpad(need - 8)(tmp_path))
    assert done.returncode == 2 and "core.scratchpad_bytes" in done.stderr, done.stderr
