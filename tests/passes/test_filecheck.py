"""FileCheck tests of the graph passes: tests/passes/filecheck/*.ir, one or more per pass.

Each file holds an input graph and lit-style lines that say how to run and what to expect:

    // RUN: cimc opt %s -p dce | filecheck %s
    // RUN: not cimc opt %s -p check-canonical 2>&1 | filecheck %s --check-prefix=ERR
    // CHECK:      %y = exp(%x)
    // CHECK-NOT:  %dead

`cimc opt` runs in this process (as `cimc.cli.main`), its stdout (with `2>&1`, its stderr
after it) goes to the `filecheck` package (LLVM FileCheck's directives), `%s` is the file
and `%S` its folder. `not` expects exit status 2 (bad input / a failing pass) instead of 0.
Add a case by dropping a file into tests/passes/filecheck/.
"""

from __future__ import annotations

import io
import shlex
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
from filecheck.matcher import Matcher
from filecheck.options import parse_argv_options

from cimc.cli import main
from cimc.passes.manager import PASSES, Pass, describe_passes, parse_pipeline

FOLDER = Path(__file__).parent / "filecheck"
CASES = sorted(FOLDER.glob("*.ir"))


@dataclass(frozen=True)
class Run:
    """One `// RUN:` line: cimc's argv, whether it must fail, stderr merged, filecheck's argv."""

    argv: list[str]
    fails: bool
    merge_stderr: bool
    check: list[str]


def run_lines(case: Path) -> list[Run]:
    runs = []
    for line in case.read_text().splitlines():
        if line.startswith("// RUN:"):
            text = line.removeprefix("// RUN:").replace("%s", str(case)).replace("%S", str(FOLDER))
            runs.append(parse_run(text, case))
    return runs


def parse_run(text: str, case: Path) -> Run:
    command, bar, check = text.partition("|")
    argv = shlex.split(command)
    fails = argv[:1] == ["not"]
    argv = argv[1:] if fails else argv
    merge = argv[-1:] == ["2>&1"]
    argv = argv[:-1] if merge else argv
    checker = shlex.split(check)
    if argv[:2] != ["cimc", "opt"] or not bar or checker[:1] != ["filecheck"]:
        raise ValueError(f"{case.name}: a RUN line is `[not] cimc opt ... | filecheck %s ...`")
    return Run(argv[1:], fails, merge, checker)


def run_cimc(run: Run) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(run.argv)
    return status, out.getvalue(), err.getvalue()


def filecheck(check_argv: list[str], text: str, tmp: Path) -> tuple[int, str]:
    """FileCheck `text` against the check file named in `check_argv`; (status, report)."""
    source = tmp / "output.txt"
    source.write_text(text)
    opts = parse_argv_options([*check_argv, "--input-file", str(source)])
    report = io.StringIO()
    with redirect_stderr(report):
        status = Matcher.from_opts(opts).run()
    return status, report.getvalue()


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_filecheck_case(case: Path, tmp_path: Path) -> None:
    runs = run_lines(case)
    assert runs, f"{case.name} has no // RUN: line"
    for run in runs:
        status, out, err = run_cimc(run)
        assert status == (2 if run.fails else 0), f"cimc {' '.join(run.argv)}: {err}"
        checked, report = filecheck(run.check, out + err if run.merge_stderr else out, tmp_path)
        assert checked == 0, f"{case.name}: {' '.join(run.argv)}\n{report}\n--- output:\n{out}"


def test_every_graph_pass_has_a_filecheck_case() -> None:
    """Every pass registered from cimc.passes (the graph passes) is run by some case."""
    describe_passes()  # imports every pass module
    graph_passes = {n for n, cls in PASSES.items() if cls.__module__.startswith("cimc.passes.")}
    tested = {p.NAME for case in CASES for run in run_lines(case) for p in _pipeline(run.argv)}
    assert graph_passes - tested == set()


def _pipeline(argv: list[str]) -> list[Pass]:
    return parse_pipeline(argv[argv.index("-p") + 1]) if "-p" in argv else []


def test_a_wrong_check_fails(tmp_path: Path) -> None:
    """The harness itself: a CHECK line the output does not hold makes FileCheck fail."""
    case = tmp_path / "wrong.ir"
    case.write_text("// CHECK: %y = exp(%x)\n")
    status, report = filecheck(["filecheck", str(case)], "%y = tanh(%x)\n", tmp_path)
    assert status == 1 and "error" in report
