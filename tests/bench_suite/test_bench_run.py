"""benchmarks/run.py: the fit, the peak-memory bracket, the table and the optional zigzag."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import run as suite  # noqa: E402


def test_fit_tells_linear_from_quadratic() -> None:
    line = suite.fit([2, 4, 8, 12], [10.0, 14.0, 22.0, 30.0])
    assert line is not None and line["linear"]
    assert line["slope"] == pytest.approx(2.0) and line["intercept"] == pytest.approx(6.0)
    square = suite.fit([2, 4, 8, 12], [4.0, 16.0, 64.0, 144.0])
    assert square is not None and not square["linear"]
    assert square["segment_slopes"] == [6.0, 12.0, 20.0]
    assert suite.fit([2], [1.0]) is None
    two = suite.fit([2, 4], [1.0, 9.0])
    assert two is not None and two["linear"] is None  # no verdict from two points


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux only")
def test_compile_peak_sees_a_temporary_allocation() -> None:
    peak = suite.CompilePeak()
    peak.enable()
    block = np.ones(200 * suite.MIB // 8)  # touched, so resident
    del block
    peak.disable()
    assert peak.reset_worked
    assert peak.peak_mib - peak.start_mib >= 150


def _row(arch: str, layers: int, compile_s: float, ratio: float) -> dict[str, Any]:
    met = {"interp_ratio": ratio <= 2, "schedule_quality": True, "utilization": True,
           "loaded": True}  # fmt: skip
    return {"arch": arch, "layers": layers, "compile_s": compile_s, "compile_rss_start_mib": 900.0,
            "compile_peak_rss_mib": 1400.0, "peak_is_compile_only": True, "bit_exact": True,
            "interp_ratio": ratio, "schedule_quality": 1.1, "utilization": 1.0,
            "loaded_ratio": 1.0, "targets_met": met}  # fmt: skip


def test_table_shows_targets_misses_and_failures() -> None:
    sizes = [
        {"layers": 2, "float_weight_bytes": 250 * suite.MIB, "rows": [_row("default", 2, 5, 1.5)]},
        {"layers": 4, "float_weight_bytes": 300 * suite.MIB, "rows": [_row("default", 4, 9, 3.0)]},
        {"layers": 8, "error": "exit 2: cimc: boom", "rows": []},
    ]
    result = {"sizes": sizes, "compile_fit": {"default": suite.fit([2, 4], [5.0, 9.0])},
              "energy": {"batch": 1, "cimc_compiled_uj": 1.0, "cimc_compiled_cycles": 10,
                         "cimc_hand_uj": 2.0, "cimc_hand_cycles": 20,
                         "zigzag": "zigzag-dse not installed"}}  # fmt: skip
    text = suite.format_table(result)
    lines = text.splitlines()
    assert "1.50x   ok" in lines[2] and "3.00x MISS" in lines[3]
    assert " 500 " in lines[2] and "2.00" in lines[2]  # 500 MiB grown = 2.00x 250 MiB
    assert "FAILED exit 2: cimc: boom" in lines[4]
    assert "<= 2x" in text and "<= 1.15" in text and ">= 90%" in text and "<= 1.05x" in text
    assert "1.00 s + 2.00 s/layer" in text and "zigzag-dse not installed" in text


def test_energy_without_zigzag_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def hide_zigzag(name: str, *args: Any) -> Any:
        return None if name == "zigzag" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", hide_zigzag)
    energy = suite.zigzag_energy(1)
    assert energy["zigzag"].startswith("zigzag-dse not installed")
    assert energy["cimc_compiled_uj"] > 0 and energy["cimc_hand_uj"] > 0
    assert "zigzag-dse not installed" in suite._energy_line(energy)


@pytest.mark.slow
def test_quick_suite_runs_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    assert suite.main(["--quick", "--layers", "1", "--no-zigzag", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"bit_exact": true' in out and '"compile_peak_rss_mib"' in out
