"""The planning command prints one JSON summary per policy; bad input exits 2."""

from __future__ import annotations

import json

import pytest

from cimc.backend.plan.cli import main

SMALL = ["--arch", "tiny", "--layers", "2", "--hidden", "96", "--heads", "3"]
SMALL += ["--intermediate", "250", "--tokens", "7"]


def test_one_summary_per_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(SMALL) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [s["policy"] for s in lines] == ["sequential", "double-buffer", "pin-what-fits"]
    weights = 2 * (4 * 96 * 96 + 2 * 96 * 250)
    assert all(s["weight_bytes_loaded"] == weights for s in lines)
    assert all(s["lower_bound_cycles"] <= s["makespan_estimate_cycles"] for s in lines)


def test_plan_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*SMALL, "--policy", "sequential", "--text"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("; stream plan policy=sequential source=dram")
    assert "layer1.fc2[224:250,64:96]" in text


def test_unknown_preset_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--arch", "nope"]) == 2
    assert "unknown architecture preset 'nope'" in capsys.readouterr().err
