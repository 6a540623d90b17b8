"""Weights all in flash with small chunks: the prefetcher must not mload a piece over a
tile a lowering has loaded and not yet multiplied by.

The map pass can split a column block's reduction into one phase per core, used at the
same time; the prefetcher's bank test (the previous phase on the bank has been passed)
then let an opportunistic mload replace a tile between TileLoader's load and its mvm.
Found with `flash_chunk_bytes` of 256 and 1024 on `tiny` (nearly every logit wrong);
4 KiB chunks happened to be fine.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import pytest
import torch

from cimc.decode.generate import generate_batch
from cimc.decode.programs import build_decoder, load_decoder, shared_reserve
from cimc.decode.specialize import specialize
from cimc.machine.arch import load_arch
from cimc.pipeline import PipelineOptions
from cimc.zoo.export import export_torch
from cimc.zoo.relu_lm import relu_lm

PROMPT = [3, 1, 4, 1]


@pytest.fixture(scope="module")
def exported() -> Any:
    lm = relu_lm(64, 2, 256, 128, 1, 64, 0.9)
    ids = torch.arange(8).reshape(1, 8) % 128
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_torch(lm, (ids, torch.ones_like(ids)), dynamic=True)


@pytest.mark.parametrize("chunk", [256, 1024])
def test_weights_in_flash_with_small_chunks_are_bit_exact(exported: Any, chunk: int) -> None:
    loaded = load_decoder(exported, len(PROMPT) + 4)
    graphs = [specialize(loaded.qgraph, loaded.axes, n) for n in (len(PROMPT), 1)]
    tiny = load_arch("tiny")
    base = replace(tiny, memory=replace(tiny.memory, flash_chunk_bytes=chunk))
    # DRAM holds the activations and caches only: every weight streams from flash
    arch = replace(base, memory=replace(base.memory, dram_bytes=shared_reserve(graphs, base)))
    progs = build_decoder(
        exported, arch, len(PROMPT), loaded.capacity, PipelineOptions(), loaded=loaded,
        keep_weights=False,
    )  # fmt: skip
    assert "weights.flash" in progs.consts and "weights.img" not in {
        d.name for d in progs.prefill.program.decls if d.rows * d.cols > 1
    }
    result = generate_batch(progs, [PROMPT], 4, with_float=False)
    (seq,) = result.sequences
    assert [s.mismatched for s in seq.steps] == [0, 0, 0, 0] and result.bit_exact
