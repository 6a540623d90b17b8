"""The encoder view: real tokens only, mean-pooled embeddings, and verify's use of it."""

from __future__ import annotations

import numpy as np
import pytest

from cimc.machine.arch import load_arch
from cimc.pipeline import compile_model
from cimc.quant.accuracy import cosine
from cimc.quant.calibrate import generated_samples
from cimc.quant.golden import dequantize_outputs, run_golden
from cimc.quant.pooling import EmbeddingAgreement, attention_mask_input, mean_pool, token_states
from cimc.reference.float_model import run_graph
from cimc.verify import verify_samples
from tests.quant.test_quantize import encoder_graph


def test_mean_pool_ignores_padding() -> None:
    states = np.arange(2 * 3 * 2, dtype=np.float64).reshape(2, 3, 2)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    np.testing.assert_allclose(mean_pool(states, mask), [[1.0, 2.0], [6.0, 7.0]])
    assert token_states((1, 3, 2), (1, 3)) and not token_states((1, 3), (1, 3))


def test_padding_does_not_count_against_real_tokens() -> None:
    ref = np.ones((1, 3, 4))
    got = ref.copy()
    got[0, 2] = -5.0  # garbage at a padded position
    view = EmbeddingAgreement()
    view.add(ref, got, np.array([[1, 1, 0]]))
    assert view.tokens.cosine == pytest.approx(1.0) and view.min_pooled == pytest.approx(1.0)
    view.add(ref, got, np.array([[1, 1, 1]]))
    assert view.min_pooled < 0.99 and view.mean_pooled > view.min_pooled


def test_verify_reports_real_tokens_and_pooled_embeddings() -> None:
    graph = encoder_graph(seed=2)
    assert attention_mask_input(graph) == "attention_mask"
    samples = generated_samples(graph, 2, seed=40)
    samples[1]["attention_mask"][0, 5:] = 0  # three padded positions
    result = compile_model(graph, load_arch("tiny"))
    report = verify_samples(result.compiled, result.float_graph, samples)
    (out,) = report.outputs
    assert report.bit_exact and report.samples == 2
    pooled, real_ref, real_got = [], [], []
    for s in samples:
        ref = run_graph(graph, s)["hidden"]
        got = dequantize_outputs(result.graph, run_golden(result.graph, s).outputs)["hidden"]
        m = s["attention_mask"].astype(bool)
        real_ref.append(ref[m])
        real_got.append(got[m])
        pooled.append(cosine(mean_pool(ref, m)[0], mean_pool(got, m)[0]))
    assert out.pooled_cosine == pytest.approx(min(pooled), abs=1e-12)
    assert out.real_token_cosine == pytest.approx(
        cosine(np.concatenate(real_ref), np.concatenate(real_got)), abs=1e-12
    )
    assert report.as_json()["outputs"]["hidden"]["pooled_cosine"] == out.pooled_cosine
