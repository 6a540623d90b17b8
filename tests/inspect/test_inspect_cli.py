"""`cimc inspect` through cimc.cli.main: tables, JSON, errors (exit 2, one line), help."""

from __future__ import annotations

import json

import pytest

from cimc.cli import main
from tests.inspect.conftest import DOUBLE, MATMUL, MLP, SOFTMAX, loaded


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["inspect", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_overview_lists_every_node_and_the_chip_map(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, str(MLP))
    assert code == 0 and err == ""
    for node in ("%linear (linear", "%relu (relu", "%linear_1 (linear_1"):
        assert node in out
    assert "3 graph nodes on 'tiny'" in out
    assert "phase 0:" in out and "phase 1:" in out and "legend: A = %linear (" in out


def test_program_without_macros(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, str(SOFTMAX))
    assert code == 0 and "no mload: the macros are never used" in out
    code, out, _ = _run(capsys, str(SOFTMAX), "--json")
    assert json.loads(out)["chip_phases"] == []
    code, out, _ = _run(capsys, str(SOFTMAX), "--macro", "0.0")
    assert code == 0 and "never loaded" in out


def test_overview_json_matches_the_schedule(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, str(MATMUL), "--json")
    data = json.loads(out)
    _, _, schedule = loaded(MATMUL)
    assert code == 0
    work = [i for i in schedule.items if i.instr.opcode != "halt"]
    assert sum(n["instructions"] for n in data["nodes"]) == len(work)
    tiles = sorted(m["tile"] for m in data["chip_phases"][-1]["macros"])
    assert tiles == ["w[0:32, 0:32]", "w[0:32, 32:64]", "w[32:64, 0:32]", "w[32:64, 32:64]"]


def test_node_listing_shows_timed_assembly(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, str(MLP), "--node", "relu", "--json")
    data = json.loads(out)
    assert code == 0 and data["node"].startswith("%relu ")
    rows = data["instructions"]
    assert {r["unit"] for r in rows} == {"dma", "vector"}
    assert sum(r["instr"].startswith("lut ") for r in rows) == 2
    assert all(r["busy_cycles"] > 0 and r["energy_pj"] > 0 for r in rows)
    code, out, _ = _run(capsys, str(MLP), "--node", "relu")
    assert "lut sp[" in out and "vector" in out  # markup-free: brackets survive


def test_macro_view_names_tiles_and_mvms(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, str(DOUBLE), "--macro", "0.1")
    assert code == 0
    assert "w[32:64, 0:32]" in out and "w[96:128, 0:32]" in out and "w[0:32, 0:32]" not in out
    code, out, _ = _run(capsys, str(DOUBLE), "--macro", "0.1", "--json")
    phases = json.loads(out)["phases"]
    assert [p["tile"] for p in phases] == ["w[32:64, 0:32]", "w[96:128, 0:32]"]
    assert [len(p["mvms"]) for p in phases] == [1, 1]
    code, out, _ = _run(capsys, str(DOUBLE), "--macro", "0.3")
    assert code == 0 and "never loaded" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--node", "softmax"), "--node: no node 'softmax'; the program has 3: '%linear ("),
        (("--macro", "0:1"), "--macro: bad macro '0:1'; write CORE.MACRO"),
        (("--macro", "5.0"), "--macro: core 5 has no section; the program uses cores [0, 1]"),
        (("--macro", "0.9"), "--macro: no macro 9: 'tiny' has macros 0..3"),
    ],
)
def test_errors_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    code, out, err = _run(capsys, str(MLP), *argv)
    assert code == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1


def test_missing_program_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = _run(capsys, str(tmp_path / "nope.cimasm"))
    assert code == 2 and err.count("\n") == 1 and "nope.cimasm" in err


@pytest.mark.parametrize("command", ["inspect", "report"])
def test_help_has_an_example(capsys: pytest.CaptureFixture[str], command: str) -> None:
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "example" in out and f"cimc {command} " in out
    if command == "report":
        assert "--plot DIR" in out
