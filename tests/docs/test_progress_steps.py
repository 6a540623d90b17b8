"""What long work reports: compile one step per pass (and per node in the backend), the
schedule simulation as instructions placed, and `cimc report` draws it on a terminal."""

from __future__ import annotations

import sys

import pytest

from cimc.cli import main
from cimc.commands.program_files import load_program_and_arch
from cimc.machine.arch import load_arch
from cimc.machine.schedule import simulate
from cimc.passes.manager import expand, parse_pipeline
from cimc.pipeline import DEFAULT_PIPELINE, PipelineOptions, compile_model
from cimc.progress import listening
from tests.docs.test_progress_cli import MODELS, PROGRAM, Terminal

Report = tuple[str, int, int, str]


def _recorded(work) -> list[Report]:  # type: ignore[no-untyped-def]
    seen: list[Report] = []
    with listening(lambda task, done, total, note: seen.append((task, done, total, note))):
        work()
    return seen


def _task(seen: list[Report], task: str) -> list[Report]:
    return [r for r in seen if r[0] == task]


def test_compile_reports_each_pass_then_each_backend_node() -> None:
    options = PipelineOptions(calibration=str(MODELS / "tiny_encoder.calib.npz"))
    model = str(MODELS / "tiny_encoder.onnx")
    result = None

    def work() -> None:
        nonlocal result
        result = compile_model(model, load_arch("tiny"), options)

    seen = _recorded(work)
    passes = [s.p.NAME for s in expand(parse_pipeline(DEFAULT_PIPELINE))]
    assert passes[-4:] == ["lower", "stage-consts", "hoist-const-loads", "merge-sends"]
    steps = _task(seen, "compile")
    total = len(passes) + 1
    assert [r[3] for r in steps] == ["import", *(f"pass {p}" for p in passes), ""]
    assert [r[1] for r in steps] == list(range(total + 1)) and {r[2] for r in steps} == {total}
    assert result is not None
    nodes = [n.name for n in result.graph.nodes()]
    backend = _task(seen, "backend")
    assert [r[3] for r in backend[:-1]] == nodes  # one step per node, in graph order
    assert backend[-1][1:3] == (len(nodes), len(nodes))


def test_simulate_reports_instructions_placed() -> None:
    program, arch = load_program_and_arch(PROGRAM, None)
    seen = _recorded(lambda: simulate(program, arch))
    total = sum(len(s.instrs) for s in program.cores)
    assert _task(seen, "simulate")[0][1:3] == (0, total)
    assert _task(seen, "simulate")[-1][1:3] == (total, total)
    relaxed = _recorded(lambda: simulate(program, arch, relaxed=True))
    assert {r[0] for r in relaxed} == {"simulate (relaxed)"}


def test_report_draws_the_simulation_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    assert main(["report", PROGRAM]) == 0
    err = stream.getvalue()
    total = sum(len(s.instrs) for s in load_program_and_arch(PROGRAM, None)[0].cores)
    assert "simulate" in err and f"{total}/{total}" in err
    assert "simulate" not in capsys.readouterr().out  # results stay clean on stdout
    assert main(["report", PROGRAM, "--quiet"]) == 0
    assert stream.getvalue() == err  # nothing more drawn with --quiet
