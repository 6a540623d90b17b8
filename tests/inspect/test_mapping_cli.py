"""`--mapping` through cimc.cli.main: compile names the copies, report and verify read
which mapping ran and the tokens per cycle, an impossible mapping exits 2 in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cimc.cli import main

ROOT = Path(__file__).resolve().parents[2]
MODEL = str(ROOT / "examples" / "models" / "tiny_encoder.onnx")


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:  # type: ignore[type-arg]
    assert main([*argv, "--json", "-q"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_report_says_which_mapping_ran(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = {}
    for mapping in ("spread", "duplicate"):
        path = str(tmp_path / f"{mapping}.cimasm")
        compiled = _json(capsys, "compile", MODEL, "--mapping", mapping, "-o", path)
        report = _json(capsys, "report", path)
        assert report["mapping"] == compiled["mapping"] == mapping
        assert report["copies"] == compiled["copies"]
        assert report["core_groups"] == compiled["core_groups"]
        assert report["run_tokens"] == 8  # x is [1, 8, 32]: 8 token rows
        assert report["tokens_per_cycle"] == pytest.approx(8 / report["makespan_cycles"])
        out[mapping] = report
    assert out["spread"]["copies"] == {} and out["spread"]["core_groups"] == {}
    copies = out["duplicate"]["copies"]
    assert copies and all(n >= 2 for n in copies.values())
    for layer, groups in out["duplicate"]["core_groups"].items():  # each copy on other cores
        assert len(groups) == copies[layer] and len({tuple(g) for g in groups}) == len(groups)
    assert main(["report", str(tmp_path / "duplicate.cimasm")]) == 0
    text = capsys.readouterr().out
    assert f"duplicate: {len(copies)} layers" in text and "tokens/cycle" in text


def test_verify_reports_the_mapping(capsys: pytest.CaptureFixture[str]) -> None:
    doc = _json(capsys, "verify", MODEL, "--mapping", "duplicate")
    assert doc["bit_exact"] is True and doc["mapping"] == "duplicate" and doc["copies"]


def test_impossible_duplicate_exits_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["compile", MODEL, "--arch", "tiny", "--mapping", "duplicate", "-q"]
    assert main([*argv, "-o", str(tmp_path / "m.cimasm")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the calibration note
    assert err.startswith("map: pass map failed: mapping=duplicate needs every weight resident")
