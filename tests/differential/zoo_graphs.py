"""Tiny zoo models (BERT, GPT-2, LLaMA) at any batch and sequence length, cheaply.

Each family is exported once per process to ONNX (the legacy exporter, symbolic batch and
sequence axes) and imported at the shapes a test asks for: an ONNX import takes tens of
milliseconds where a torch.export trace takes seconds. Inputs: random token ids and, per
sequence, a padding mask of its own length, so that the batch elements differ.
"""

from __future__ import annotations

import functools
import tempfile
import warnings
from pathlib import Path

import numpy as np

from cimc.api import import_model
from cimc.ir.graph import Graph
from cimc.passes.manager import PassManager, expand, parse_pipeline

FAMILIES = ("bert", "gpt2", "llama")
_DIR = tempfile.TemporaryDirectory(prefix="cimc-zoo-")  # removed when the process ends


@functools.cache
def zoo_onnx(family: str) -> Path:
    """`family` tiny (random weights, hidden states out) as an ONNX file of this process."""
    from cimc.zoo import build_model, example_inputs, export_onnx

    module = build_model(family, "tiny")
    inputs = example_inputs(module, batch=2, seq_len=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_onnx(module, inputs, Path(_DIR.name) / f"{family}.onnx", "legacy")


def zoo_graph(family: str, batch: int, seq: int) -> Graph:
    """The imported (not yet canonical) graph of `family` tiny at [batch, seq]."""
    shapes = {"input_ids": (batch, seq), "attention_mask": (batch, seq)}
    return import_model(zoo_onnx(family), shapes=shapes, canonicalize=False)


def zoo_feeds(batch: int, seq: int, seed: int = 0, vocab: int = 512) -> dict[str, np.ndarray]:
    """Token ids below `vocab` and a padding mask keeping a different prefix per sequence
    (the first keeps all `seq` tokens)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (batch, seq), dtype=np.int64)
    keep = [seq, *rng.integers(1, seq + 1, batch - 1)]
    mask = (np.arange(seq)[None, :] < np.array(keep)[:, None]).astype(np.int64)
    return {"input_ids": ids, "attention_mask": mask}


def quantized(graph: Graph) -> Graph:
    """`graph` canonical and quantized as compile_model's graph parts do it (2 samples)."""
    passes = expand(parse_pipeline("idioms,check-canonical,quantize{samples=2}"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PassManager(passes).run(graph)  # type: ignore[no-any-return]
