"""cimc/pipeline.py: pass-manager options, the float/quantized cut, calibration files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cimc.errors import CimcError
from cimc.pipeline import PipelineOptions, compile_model
from cimc.verify import verify_compiled
from tests.e2e.e2e_helpers import arch, float_input, import_module, mlp


@pytest.fixture(scope="module")
def graph():  # type: ignore[no-untyped-def]
    return import_module(mlp((40, 64, 16)), float_input((1, 4, 40)))


def test_print_options_and_timings(graph) -> None:  # type: ignore[no-untyped-def]
    printed: list[str] = []
    options = PipelineOptions(print_ir_after_all=True, time_passes=True, print_fn=printed.append)
    result = compile_model(graph, arch("tiny"), options)
    headers = [p.splitlines()[0] for p in printed if p.startswith("// ----- IR after")]
    assert [h.split()[4].split("{")[0] for h in headers] == [
        "canonicalize", "check-canonical", "quantize"
    ]  # fmt: skip
    assert "q.linear" in printed[2] and "q.linear" not in printed[0]
    assert printed[-1].startswith("// ----- pass timing") and "backend" in printed[-1]
    assert [t.name for t in result.timings][-2:] == ["quantize", "backend"]
    assert all(n.type.dtype.is_float for n in result.float_graph.nodes() if n.op.NAME == "linear")


def test_pipeline_without_quantize_is_refused(graph) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CimcError, match="must contain 'quantize'"):
        compile_model(graph, arch("tiny"), PipelineOptions(pipeline="canonicalize,dce"))


def test_calibration_file_changes_scales(graph, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Calibrating on large inputs widens the input scale; the result is still bit-exact."""
    path = tmp_path / "calib.npz"
    np.savez(path, input=10 * float_input((3, 1, 4, 40), seed=5))
    plain = compile_model(graph, arch("tiny"))
    calibrated = compile_model(graph, arch("tiny"), PipelineOptions(calibration=str(path)))
    before, after = (r.compiled.inputs[0].scale for r in (plain, calibrated))
    assert before is not None and after is not None and after > 3 * before
    report = verify_compiled(
        calibrated.compiled, calibrated.float_graph, {"input": float_input((1, 4, 40))}
    )
    assert report.bit_exact
