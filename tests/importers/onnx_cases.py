"""Shared helpers of the ONNX importer tests: cached exports, runners, the allowed census.

Dynamo exports take 10-30 s each, so the default run reads two checked-in dynamo exports
(tests/importers/data, rebuilt by tests/importers/make_onnx_data.py) and
exports live with the legacy exporter (under a second); live dynamo exports are slow tests.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort

from cimc.api import import_model
from cimc.ir.graph import Graph
from cimc.reference.float_model import run_graph
from cimc.zoo import build_model, example_inputs, export_onnx

DATA = Path(__file__).parent / "data"
SEQ = 7
# What an imported transformer may contain: compute and layout ops, no shape arithmetic.
ALLOWED = {
    "input", "constant", "embedding", "linear", "attention", "layer_norm", "rms_norm",
    "gelu", "silu", "rotary", "add", "mul", "reshape", "transpose", "slice", "cast",
}  # fmt: skip
_TMP = Path(tempfile.mkdtemp(prefix="cimc-onnx-tests-"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)  # exports are cached per process


def data_path(family: str, exporter: str) -> Path:
    return DATA / f"{family}_{exporter}.onnx"


@functools.cache
def exported(
    family: str,
    exporter: str,
    preset: str = "tiny",
    head: str = "hidden",
    opset: int = 18,
    attn: str = "sdpa",
) -> Path:
    """The ONNX export of a zoo model (the checked-in dynamo file for the defaults)."""
    stored = data_path(family, exporter)
    if (preset, head, opset, attn) == ("tiny", "hidden", 18, "sdpa") and stored.is_file():
        return stored
    model = build_model(family, preset, head=head, attn_implementation=attn)
    path = _TMP / f"{family}_{preset}_{head}_{exporter}_{opset}_{attn}.onnx"
    inputs = example_inputs(model, seq_len=SEQ)
    return export_onnx(model, inputs, path, exporter=exporter, opset=opset)


def feeds(batch: int = 1, seq: int = SEQ, vocab: int = 512, seed: int = 0) -> dict[str, np.ndarray]:
    """Token ids and a right-padded mask (the last two positions of row 0 are padding)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (batch, seq)).astype(np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    mask[0, -2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def onnxruntime_output(path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, inputs)[0]


def float_output(graph: Graph, inputs: dict[str, np.ndarray]) -> np.ndarray:
    return run_graph(graph, inputs)["output"]


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def census(graph: Graph) -> Counter[str]:
    return Counter(n.op.NAME for n in graph.nodes())


def import_and_check(path: Path, batch: int = 1, seq: int = SEQ) -> Graph:
    """Import `path` at [batch, seq] and assert it matches onnxruntime within 1e-4."""
    shapes = {"input_ids": (batch, seq), "attention_mask": (batch, seq)}
    graph = import_model(path, shapes=shapes)
    inputs = feeds(batch, seq)
    error = relative_error(float_output(graph, inputs), onnxruntime_output(path, inputs))
    assert error < 1e-4, f"{path.name}: relative error {error:.2e} against onnxruntime"
    return graph
