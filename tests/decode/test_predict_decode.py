"""`cimc generate --sparsity predict` on an OPT-style ReLU LM (~90% of the FFN activations
zero): bit-exact at every step against the golden (which applies the same predictors),
each decode step loading the predicted up-projection columns and the active down rows
only, fewer weight bytes than `exact`, and the predictor's recall reported per step."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from cimc.cli import main
from cimc.zoo.export import export_torch
from cimc.zoo.relu_lm import relu_lm

HIDDEN, FFN = 64, 256


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lm = relu_lm(hidden=HIDDEN, layers=2, ffn=FFN, vocab=128, zero_fraction=0.9)
    ids = torch.arange(8).reshape(1, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = export_torch(lm, (ids, torch.ones_like(ids)), dynamic=True)
    path = tmp_path_factory.mktemp("predict") / "opt-relu.pt2"
    torch.export.save(exported, str(path))
    return path


def _generate(model: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    argv = [
        "generate", str(model), "--prompt-ids", "3,1,4", "--max-new-tokens", "5",
        "--arch", "tiny", "--json", "--quiet", *extra,
    ]  # fmt: skip
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_predict_is_bit_exact_and_loads_the_predicted_columns(
    model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dense = _generate(model, capsys, "--sparsity", "none", "--no-float")
    exact = _generate(model, capsys, "--sparsity", "exact", "--no-float")
    predicted = _generate(model, capsys, "--sparsity", "predict", "--window", "2")
    assert predicted["bit_exact"] and 0.0 <= predicted["float_agreement"] <= 1.0
    dense_bytes = dense["steps"][1]["cost"]["weight_bytes_loaded"]
    for i, step in enumerate(predicted["steps"][1:], 1):
        shares, active = step["predicted_fraction"], step["active_fraction"]
        assert len(shares) == 2 and len(active) == 2 and len(step["predictor_recall"]) == 2
        assert all(0.0 < r <= 1.0 for r in step["predictor_recall"].values())
        # the up-projections load their predicted columns, the down-projections their
        # active rows: every other weight byte is the dense program's
        skipped = sum((1 - s) * HIDDEN * FFN for s in shares.values())
        skipped += sum((1 - a) * HIDDEN * FFN for a in active.values())
        extra = step["cost"]["weight_bytes_loaded"] - round(dense_bytes - skipped)
        assert 0 < extra <= 2 * (HIDDEN + FFN) * HIDDEN  # the predictors' own weights
        loaded = step["cost"]["weight_bytes_loaded"]
        assert loaded < exact["steps"][i]["cost"]["weight_bytes_loaded"]


def test_silu_ffn_refused_by_exact_compiles_with_predict() -> None:
    """exact refuses SiLU FFNs (not exactly sparse); predict compiles them, bit-exact (SiLU
    is rarely code 0: the predictor keeps nearly every neuron)."""
    from cimc.api import import_model
    from cimc.errors import CimcError
    from cimc.pipeline import PipelineOptions, compile_model
    from cimc.verify import verify_compiled
    from tests.differential.generator import random_arch
    from tests.differential.test_predict_ffn import SiluFfn

    x = torch.randn(1, 3, 24, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = import_model(SiluFfn(24, 96, 1).eval(), example_inputs=(x,))
    with pytest.raises(CimcError, match="not exactly sparse"):
        compile_model(graph, random_arch(1), PipelineOptions(sparsity="exact"))
    result = compile_model(graph, random_arch(1), PipelineOptions(sparsity="predict"))
    report = verify_compiled(result.compiled, result.float_graph, {"x": x.numpy()})
    assert report.bit_exact and report.cosine_vs_float > 0.9


def test_predict_window_from_flash_is_bit_exact(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the weights half in flash, --window 2 caches each FFN's neuron records (up
    column and down row bundled): each step copies only newly wanted neurons."""
    import tomllib

    text = Path("isa/arch/tiny.toml").read_text()
    old = f"dram_bytes = {tomllib.loads(text)['memory']['dram_bytes']}"
    small = tmp_path / "tiny-small.toml"
    small.write_text(text.replace(old, f"dram_bytes = {112 * 1024}"))  # half the weights
    out = _generate(model, capsys, "--arch", str(small), "--sparsity", "predict", "--no-float")
    assert out["bit_exact"]
    windowed = _generate(
        model, capsys, "--arch", str(small), "--sparsity", "predict", "--window", "2", "--no-float"
    )
    assert windowed["bit_exact"] and windowed["tokens"] == out["tokens"]
    steps = windowed["steps"][1:]
    masked = set(steps[0]["predicted_fraction"])
    # bundled: each FFN's one fill (its up-projection's) brings the down rows too
    assert all(set(s["window_copied_fraction"]) == masked for s in steps)
    # the prefill leaves the cache alone (no room for the fill): the first decode step
    # copies every predicted neuron, the later ones only those not wanted in the last 2
    for layer in masked:
        first = steps[0]["window_copied_fraction"][layer]
        assert first == steps[0]["predicted_fraction"][layer]
        assert all(s["window_copied_fraction"][layer] < first for s in steps[1:])
