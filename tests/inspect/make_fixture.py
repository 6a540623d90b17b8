"""Regenerate tests/inspect/data/mlp.cimasm (+ .safetensors): a 40 -> 70 -> 24 MLP compiled
for the tiny arch. Checked in so the inspect tests need not import torch and compile (~10 s).

    cd /work/main && python -m tests.inspect.make_fixture
"""

from __future__ import annotations

from pathlib import Path

from cimc.backend.builder.saved import write_compiled
from cimc.pipeline import PipelineOptions, compile_model
from tests.e2e.e2e_helpers import arch, float_input, import_module, mlp

FIXTURE = Path(__file__).parent / "data" / "mlp.cimasm"


def compile_fixture(path: Path = FIXTURE) -> Path:
    graph = import_module(mlp((40, 70, 24)), float_input((1, 7, 40)))
    result = compile_model(graph, arch("tiny"), PipelineOptions())
    return write_compiled(result.compiled, path)[0]


if __name__ == "__main__":
    print(compile_fixture())
