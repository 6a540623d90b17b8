"""Step 6: compilation is deterministic, and a golden snapshot shows every change in review.

To accept an intended change of the snapshot:
    python tests/e2e/test_e2e_determinism.py --update
"""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cimc.backend.builder.saved import write_compiled
from cimc.backend.stages.backend import compile_graph
from cimc.machine.printer import print_program
from cimc.pipeline import PipelineOptions, compile_model
from cimc.quant.quantize import quantize_model

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
sys.path.insert(0, str(ROOT))

from tests.e2e.e2e_helpers import arch, float_input, import_module, mlp, zoo_graph  # noqa: E402
from tests.e2e.snapshot_model import SnapshotModel  # noqa: E402


def snapshot_model() -> tuple[torch.nn.Module, np.ndarray]:
    """MLP 40 -> 70 -> 24 with a head split (slice, transpose, concat), compiled for tiny."""
    return SnapshotModel(mlp((40, 70, 24), seed=11)).eval(), float_input((1, 6, 40), seed=12)


def snapshot_text() -> str:
    model, x = snapshot_model()
    qgraph = quantize_model(import_module(model, x)).graph
    return print_program(compile_graph(qgraph, arch("tiny"), name="snapshot").program)


def test_golden_snapshot() -> None:
    want = (GOLDEN / "snapshot_tiny.cimasm").read_text()
    got = snapshot_text()
    diff = "".join(
        difflib.unified_diff(want.splitlines(True), got.splitlines(True), "golden", "now", n=1)
    )
    assert got == want, f"snapshot changed (update: python {__file__} --update):\n{diff[:4000]}"


def test_two_compilations_are_byte_identical(tmp_path: Path) -> None:
    graph = zoo_graph("llama")
    files = []
    for k in range(2):
        result = compile_model(graph, arch("tiny"), PipelineOptions())
        files.append(write_compiled(result.compiled, tmp_path / f"run{k}" / "m.cimasm"))
    (a, ca), (b, cb) = files
    assert a.read_bytes() == b.read_bytes()
    assert ca is not None and cb is not None and ca.read_bytes() == cb.read_bytes()


@pytest.mark.slow
def test_separate_processes_with_other_hash_seeds(tmp_path: Path) -> None:
    """No dict/set/id order leaks into the output: two processes, two hash seeds."""
    model, x = snapshot_model()
    onnx_path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.from_numpy(x),),
            str(onnx_path),
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
        )
    outs = []
    for seed in ("1", "2"):
        out = tmp_path / seed / "m.cimasm"
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        code = "import sys, cimc.cli as c; sys.exit(c.main(sys.argv[1:]))"
        subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                "compile",
                str(onnx_path),
                "-o",
                str(out),
                "--arch",
                "tiny",
            ],
            check=True,
            env=env,
            capture_output=True,
        )
        outs.append((out.read_bytes(), out.with_suffix(".safetensors").read_bytes()))
    assert outs[0] == outs[1]
    assert np.frombuffer(outs[0][1], np.uint8).size > 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--update"]:
        GOLDEN.mkdir(exist_ok=True)
        (GOLDEN / "snapshot_tiny.cimasm").write_text(snapshot_text())
        print(f"wrote {GOLDEN / 'snapshot_tiny.cimasm'}")
