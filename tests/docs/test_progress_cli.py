"""Progress on stderr: drawn for a terminal, absent for pipes and with --quiet."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest

from cimc.cli import main
from cimc.progress import display, poll, report

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = str(ROOT / "isa/examples/matmul_2core.cimasm")
INPUTS = str(ROOT / "isa/examples/matmul_2core.inputs.npz")
MODELS = ROOT / "examples/models"
MODEL_ARGS = [
    str(MODELS / "tiny_encoder.onnx"),
    "--arch",
    "tiny",
    "--calibration",
    str(MODELS / "tiny_encoder.calib.npz"),
]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_cli(
    args: list[str], monkeypatch: pytest.MonkeyPatch, stream: io.StringIO
) -> tuple[int, str]:
    monkeypatch.setattr(sys, "stderr", stream)
    code = main(args)
    return code, stream.getvalue()


def test_run_draws_the_interpreter_bar_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_cli(["run", PROGRAM, "--inputs", INPUTS], monkeypatch, Terminal())
    assert code == 0 and "interpret" in err and "22/22" in err
    assert "interpret" not in capsys.readouterr().out  # results stay clean on stdout


@pytest.mark.parametrize("terminal", [True, False])
def test_nothing_extra_with_quiet_or_without_a_terminal(
    terminal: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", PROGRAM, "--inputs", INPUTS] + (["--quiet"] if terminal else [])
    code, err = run_cli(args, monkeypatch, Terminal() if terminal else io.StringIO())
    assert code == 0 and err == ""
    assert "outputs (" in capsys.readouterr().out


def test_compile_shows_its_stages_and_calibration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 13 samples no other test uses: calibrations are cached by content, and a cache hit
    # has nothing to show
    with np.load(MODELS / "tiny_encoder.calib.npz") as data:
        np.savez(tmp_path / "calib.npz", input_ids=data["input_ids"][:13])
    args = ["compile", *MODEL_ARGS[:3], "--calibration", str(tmp_path / "calib.npz")]
    code, err = run_cli([*args, "-o", str(tmp_path / "m.cimasm")], monkeypatch, Terminal())
    assert code == 0 and "compile" in err and "calibrate" in err and "13/13" in err
    assert "wrote" in capsys.readouterr().out


def test_verify_quiet_leaves_stderr_empty(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_cli(["verify", *MODEL_ARGS, "--quiet"], monkeypatch, Terminal())
    assert code == 0 and err == ""
    assert "bit-exact" in capsys.readouterr().out


def test_reports_without_a_display_cost_nothing_and_draw_nothing() -> None:
    stream = io.StringIO()
    with display(stream=stream):  # not a terminal: no reporter installed
        report("work", 1, 2)
        with poll("loop", 10, lambda: 5):
            pass
    assert stream.getvalue() == ""


def test_the_bar_goes_away_once_every_task_is_done() -> None:
    stream = Terminal()
    with display(stream=stream):
        report("a", 0, 2, "first")
        report("a", 2, 2)
        drawn = stream.getvalue()
        report("b", 1, 1)  # already complete: drawn and gone again
    assert "a: first" in drawn
    assert stream.getvalue().count("\x1b[?25l") == 2  # the bar was started twice (cursor hidden)
