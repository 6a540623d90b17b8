"""int4 weights in the quantizer: per-channel codes in [-7, 7], plans that say so, IR text
that prints the width only when it is not 8, the golden computing with those codes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cimc.errors import CimcError
from cimc.ir.parser import parse_graph
from cimc.ir.printer import print_graph, referenced_constants
from cimc.passes.quantize import Quantize
from cimc.quant import recipes
from cimc.quant.constants import quantize_weight_per_channel
from cimc.quant.dialect import QLinear
from cimc.quant.plans import LinearPlan, plan_linear
from tests.e2e.e2e_helpers import float_input, import_module, mlp


def test_int4_codes_use_the_whole_range_per_channel() -> None:
    w = np.random.default_rng(0).normal(0, 1, (64, 5)) * np.array([0.1, 1, 3, 10, 0])
    q = quantize_weight_per_channel(w, axis=1, bits=4)
    assert q.codes.dtype == np.int8 and np.abs(q.codes).max() == 7
    assert list(np.abs(q.codes).max(axis=0)) == [7, 7, 7, 7, 0]
    np.testing.assert_allclose(q.scale[:4], np.abs(w[:, :4]).max(axis=0) / 7)
    err = np.abs(q.codes * q.scale - w)[:, :4] / q.scale[:4]
    assert err.max() <= 0.5 + 1e-9  # round to nearest
    with pytest.raises(CimcError, match="weights are 4 or 8 bits, got 3"):
        quantize_weight_per_channel(w, bits=3)


def test_int4_plan_holds_int4_codes_and_computes_with_them() -> None:
    rng = np.random.default_rng(1)
    w, b = rng.normal(0, 0.3, (40, 6)), rng.normal(0, 1, 6)
    plan4 = plan_linear(w, b, 0.05, 0.2, 8, weight_bits=4)
    plan8 = plan_linear(w, b, 0.05, 0.2, 8)
    assert plan4.weight_bits == 4 and np.abs(plan4.weight).max() <= 7
    x = torch.from_numpy(rng.integers(-128, 128, (3, 40)))
    y4, y8 = recipes.linear(x, plan4), recipes.linear(x, plan8)
    assert not torch.equal(y4, y8)  # coarser weights: other codes
    assert (y4.double() - y8.double()).abs().mean() < 8  # ... close to the int8 ones
    with pytest.raises(CimcError, match="LinearPlan weight codes exceed 4 bits"):
        LinearPlan(plan8.weight, plan8.bias, plan8.requant, weight_bits=4)


def _quantized(weight_bits: int, keep: str = "") -> object:
    graph = import_module(mlp((24, 40, 8)), float_input((1, 3, 24)))
    q = Quantize(quiet=True, weight_bits=weight_bits, keep_int8=keep)
    return q.apply(graph).ir


def test_ir_text_prints_weight_bits_only_when_not_8() -> None:
    q8, q4 = _quantized(8), _quantized(4)
    assert "weight_bits" not in print_graph(q8)  # int8 graphs print as before
    text = print_graph(q4)
    assert text.count("weight_bits = 4") == 2
    again = parse_graph(text, referenced_constants(q4))
    assert print_graph(again) == text
    bits = [n.op.plan.weight_bits for n in again.nodes() if isinstance(n.op, QLinear)]
    assert bits == [4, 4]


def test_keep_int8_names_layers_and_refuses_unknown_names() -> None:
    q = _quantized(4, keep="linear_1")
    linears = [n for n in q.nodes() if isinstance(n.op, QLinear)]  # type: ignore[attr-defined]
    assert [(n.name, n.op.plan.weight_bits) for n in linears] == [("linear", 4), ("linear_1", 8)]
    with pytest.raises(CimcError, match=r"keep_int8 part 'lm_head' is in no linear layer's name"):
        _quantized(4, keep="lm_head")
    with pytest.raises(CimcError, match="weight_bits must be 4 or 8, got 2"):
        _quantized(2)


def test_group_scales_follow_rows_closer_and_stay_integer() -> None:
    rng = np.random.default_rng(2)
    w = rng.normal(0, 1, (128, 8)) * np.repeat([0.02, 1.0], 64)[:, None]  # two row scales
    per_channel = plan_linear(w, None, 0.05, 0.2, 8, weight_bits=4)
    grouped = plan_linear(w, None, 0.05, 0.2, 8, weight_bits=4, group_size=64)
    assert np.all(per_channel.weight[:64] == 0)  # small rows vanish under a channel scale
    assert np.abs(grouped.weight[:64]).max() == 7  # ... not under their own
    eff = grouped.effective_weight()
    assert eff.dtype == np.int64 and np.array_equal(
        eff[64:], grouped.weight[64:].astype(np.int64) * 256
    )
    x = rng.integers(-128, 128, (5, 128)).astype(np.float64)
    exact = (x[:, :64] @ w[:64]).ravel()  # what the small rows contribute
    for plan, low, high in ((per_channel, -1.0, 0.5), (grouped, 0.97, 1.0)):
        acc = (x[:, :64] @ plan.effective_weight()[:64]).ravel()
        corr = np.corrcoef(acc, exact)[0, 1] if acc.any() else 0.0
        assert low < corr <= high
    with pytest.raises(CimcError, match=r"group_mult must be \[2, 8\] for group size 64"):
        LinearPlan(grouped.weight, grouped.bias, grouped.requant, 4, 64, grouped.group_mult[:1])
