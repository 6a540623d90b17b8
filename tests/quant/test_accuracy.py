"""The accuracy report: cosine / max error per output and per value."""

from __future__ import annotations

import numpy as np
import pytest
from test_quantize import encoder_graph, quantized

from cimc.quant.accuracy import accuracy_report, compare, cosine
from cimc.quant.calibrate import generated_samples
from cimc.quant.golden import dequantize_outputs, run_golden
from cimc.reference.float_model import run_graph


def test_cosine_and_compare() -> None:
    a = np.array([1.0, 2.0, 3.0])
    assert cosine(a, 2 * a) == pytest.approx(1.0)
    assert cosine(a, -a) == pytest.approx(-1.0)
    assert cosine(np.zeros(3), np.zeros(3)) == 1.0 and cosine(a, np.zeros(3)) == 0.0
    v = compare("x", a, a + [0, 0.5, -0.25], 0.1)
    assert v.max_abs_error == 0.5 and v.max_abs_ref == 3.0 and "cos" in v.line()


def test_report_matches_a_direct_computation() -> None:
    g = encoder_graph()
    q = quantized(g)
    samples = generated_samples(g, 2, seed=300)
    report = accuracy_report(g, q, samples)
    ref = np.concatenate([run_graph(g, s)["hidden"].ravel() for s in samples])
    got = np.concatenate(
        [dequantize_outputs(q, run_golden(q, s).outputs)["hidden"].ravel() for s in samples]
    )
    (row,) = report.outputs
    assert row.name == "hidden" and report.samples == 2 and not report.values
    assert row.cosine == pytest.approx(cosine(ref, got), abs=1e-12)
    assert row.max_abs_error == pytest.approx(np.abs(ref - got).max())


def test_per_value_rows_show_where_precision_is_lost() -> None:
    g = encoder_graph()
    q = quantized(g)
    report = accuracy_report(g, q, generated_samples(g, 2, seed=301), per_value=True)
    rows = {v.name: v for v in report.values}
    order = [n.name for n in g.nodes() if n.name in rows]
    assert [v.name for v in report.values] == order  # graph order
    assert {"emb", "x1", "fc1", "gelu", "att", "ln_f"} <= set(rows)
    assert rows["emb"].max_abs_error <= rows["emb"].scale / 2 + 1e-9  # a table lookup
    assert rows["ln_f"].cosine == pytest.approx(report.outputs[0].cosine)
    assert all(v.cosine > 0.99 for v in report.values)
    text = report.format()
    assert text.splitlines()[0].startswith("accuracy of the integer model") and "att_r" in text


def test_worst_ranks_computing_values_by_their_drop() -> None:
    g = encoder_graph()
    q = quantized(g)
    report = accuracy_report(g, q, generated_samples(g, 2, seed=302), per_value=True)
    rows = {v.name: v for v in report.values}
    for v in report.values:
        inputs = [rows[i].cosine for i in g.node(v.name).inputs if i in rows]
        assert v.drop == pytest.approx((min(inputs) if inputs else 1.0) - v.cosine)
    worst = report.worst()
    assert [v.drop for v in worst] == sorted((v.drop for v in worst), reverse=True)
    assert all(v.op for v in worst) and "q_r" in rows and rows["q_r"].op == ""  # a reshape
    assert report.worst(3) == worst[:3]
    # own error: the recipe alone, so never worse than all it inherits plus its own
    assert rows["emb"].own == pytest.approx(rows["emb"].cosine)  # no float operand
    assert all(0.99 < v.own <= 1.0 + 1e-12 for v in worst)
    assert "own_cosine" in worst[0].as_json()
