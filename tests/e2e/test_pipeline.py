"""cimc/pipeline.py: pass-manager options, the float/quantized cut, calibration files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cimc.errors import CimcError
from cimc.machine.printer import print_program
from cimc.passes.idioms import Idioms
from cimc.pipeline import PipelineOptions, compile_model
from cimc.verify import verify_compiled
from tests.e2e.e2e_helpers import arch, float_input, import_module, mlp


@pytest.fixture(scope="module")
def graph():  # type: ignore[no-untyped-def]
    return import_module(mlp((40, 64, 16)), float_input((1, 4, 40)))


BACKEND = [
    "tile",
    "map",
    "plan-values",
    "plan-memory",
    "plan-sparsity",
    "lower",
    "stage-consts",
    "hoist-const-loads",
    "merge-sends",
]


def test_print_options_and_timings(graph) -> None:  # type: ignore[no-untyped-def]
    printed: list[str] = []
    options = PipelineOptions(print_ir_after_all=True, time_passes=True, print_fn=printed.append)
    result = compile_model(graph, arch("tiny"), options)
    headers = [p.splitlines()[0] for p in printed if p.startswith("// ----- IR after")]
    names = [h.split()[4].split("{")[0] for h in headers]
    idioms = [p.NAME for p in Idioms().passes()]  # the composite prints after each of its passes
    assert names == [*idioms, "check-canonical", "quantize", *BACKEND]
    dumps = dict(zip(names, printed, strict=False))
    assert "q.linear" in dumps["quantize"] and "q.linear" not in dumps["canonicalize"]
    assert "// tile: " in dumps["tile"] and "phase 0" in dumps["map"]
    assert "value %" in dumps["plan-values"] and "phase 0" in dumps["plan-values"]
    assert "// plan-memory: weight image " in dumps["plan-memory"]
    assert dumps["merge-sends"].endswith(print_program(result.compiled.program))
    assert ".core 0" in dumps["lower"] and "mvm" in dumps["lower"]
    assert printed[-1].startswith("// ----- pass timing") and "  import" in printed[-1]
    assert [t.name for t in result.timings] == ["import", *names]
    assert all(n.type.dtype.is_float for n in result.float_graph.nodes() if n.op.NAME == "linear")


def test_print_before_after_change_and_composites(graph) -> None:  # type: ignore[no-untyped-def]
    """--print-ir-before, --print-ir-after of a composite (after its last pass) and
    --print-ir-after-change (only passes that changed the IR)."""
    printed: list[str] = []
    options = PipelineOptions(
        print_ir_before=("tile",), print_ir_after=("backend",), print_fn=printed.append
    )
    compile_model(graph, arch("tiny"), options)
    assert [p.splitlines()[0] for p in printed] == [
        "// ----- IR before tile{arch=} ----- //",
        "// ----- IR after merge-sends ----- //",
    ]
    assert "q.linear" in printed[0]  # the quantized graph the backend starts from
    changed: list[str] = []
    options = PipelineOptions(print_ir_after_change=True, print_fn=changed.append)
    result = compile_model(graph, arch("tiny"), options)
    names = [p.split()[4].split("{")[0] for p in changed]
    assert names == [t.name for t in result.timings[1:] if t.modified]
    assert "check-canonical" not in names  # an analysis: never changes the graph
    assert {"quantize", "tile", "map", "plan-values", "plan-memory", "lower"} <= set(names)


def test_pipeline_with_explicit_backend_passes(graph) -> None:  # type: ignore[no-untyped-def]
    """Spelling the backend passes out, with a policy, gives the program of the composite."""
    spelled = "canonicalize,check-canonical,quantize," + ",".join(BACKEND)
    a = compile_model(graph, arch("tiny"), PipelineOptions(pipeline=spelled))
    b = compile_model(graph, arch("tiny"))
    assert print_program(a.compiled.program) == print_program(b.compiled.program)
    with pytest.raises(CimcError, match="pass lower runs on a plan, but after quantize"):
        compile_model(graph, arch("tiny"), PipelineOptions(pipeline="quantize,lower"))
    with pytest.raises(CimcError, match="unknown streaming policy 'fast'"):
        compile_model(
            graph,
            arch("tiny"),
            PipelineOptions(pipeline="quantize,tile,map{policy=fast},plan-values,lower"),
        )


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
