"""examples/export_hf.py end to end: export, compile, verify (bit-exact), plot."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "export_hf.py"
FAST = ("distilbert", "legacy")


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cimc_example_export_hf", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


export_hf = load_script()
CASES = [(f, e) for f in sorted(export_hf.CONFIGS) for e in export_hf.EXPORTERS]


def check(family: str, exporter: str, out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export_hf.main([family, "--exporter", exporter, "--layers", "1", "-o", str(out)]) == 0
    stem = out / f"{family}-{exporter}"
    model = stem.with_suffix(".pt2" if exporter == "torch-export" else ".onnx")
    assert model.is_file() and stem.with_suffix(".cimasm").is_file()
    report = json.loads(stem.with_suffix(".verify.json").read_text())
    assert report["bit_exact"] and report["cosine_vs_float"] > 0.99
    plots = sorted(p.name for p in (out / f"{stem.name}-plots").glob("*.png"))
    assert plots == ["layers.png", "occupancy.png", "roofline.png"]
    printed = capsys.readouterr().out
    assert f"$ cimc compile {model}" in printed and f"{family} via {exporter}" in printed


def test_one_family_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    check(*FAST, tmp_path, capsys)


@pytest.mark.slow
@pytest.mark.parametrize(("family", "exporter"), [c for c in CASES if c != FAST])
def test_every_family_and_exporter(
    family: str, exporter: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    check(family, exporter, tmp_path, capsys)


def test_the_script_refuses_ambiguous_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        export_hf.main([])
    assert done.value.code == 2 and "give one FAMILY or --all" in capsys.readouterr().err
