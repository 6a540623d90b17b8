"""The model zoo: random-weight HF models from configs and the three exporters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from cimc.errors import CimcError
from cimc.zoo import (
    EXAMPLES,
    FAMILIES,
    build_model,
    example_inputs,
    export_onnx,
    export_torch,
    make_config,
    weight_bytes,
    write_example,
)


def _ort(path: Path, ids: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("head", ["hidden", "lm"])
def test_families_build_and_run(family: str, head: str) -> None:
    if head == "lm" and FAMILIES[family].lm_cls is None:
        with pytest.raises(CimcError, match="has no LM head here; use head='hidden'"):
            build_model(family, head=head)
        return
    model = build_model(family, head=head)
    ids, mask = example_inputs(model, batch=2, seq_len=7, padded=True)
    with torch.no_grad():
        out = model(ids, mask)
    config = model.model.config
    hidden = getattr(config, "dim", getattr(config, "n_embd", config.hidden_size))
    width = config.vocab_size if head == "lm" else make_config(family).to_dict().get(
        "hidden_size", hidden)  # fmt: skip
    assert out.shape == (2, 7, width)
    assert torch.isfinite(out).all()
    assert not model.training and config.use_cache is False


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_grouped_query_attention_configs(family: str) -> None:
    tiny, odd = make_config(family), make_config(family, "odd")
    assert tiny.num_key_value_heads < tiny.num_attention_heads
    assert (odd.hidden_size, odd.num_attention_heads, odd.intermediate_size) == (96, 3, 250)
    assert odd.num_key_value_heads == 1


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_special_token_ids_are_in_the_vocabulary(family: str) -> None:
    """transformers warns at build time about an id outside the vocabulary (GPT-2's 50256)."""
    for preset in ["tiny", *FAMILIES[family].presets]:
        config = make_config(family, preset)
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(config, key, None)
            assert value is None or 0 <= value < config.vocab_size, (preset, key, value)


def test_overrides_and_presets() -> None:
    config = make_config("bert", "odd", num_hidden_layers=1)
    assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers) == (96, 3, 1)
    assert make_config("llama", attn_implementation="eager")._attn_implementation == "eager"
    assert make_config("llama")._attn_implementation == "sdpa"
    with pytest.raises(CimcError, match="flash"):
        make_config("llama", attn_implementation="flash_attention_2")
    base = make_config("bert", "base")
    assert (base.hidden_size, base.num_hidden_layers, base.intermediate_size) == (768, 12, 3072)


def test_unknown_names_are_clear_errors() -> None:
    with pytest.raises(CimcError, match="unknown model family 'bart'.*bert"):
        build_model("bart")
    with pytest.raises(CimcError, match="no preset 'huge'.*odd"):
        make_config("gpt2", "huge")
    with pytest.raises(CimcError, match="unknown head"):
        build_model("bert", head="pooler")
    with pytest.raises(CimcError, match="unknown example"):
        write_example("bert-huge", ".")


def test_weights_are_seeded_and_every_parameter_is_random() -> None:
    a, b, c = build_model("bert"), build_model("bert"), build_model("bert", seed=1)
    ids, mask = example_inputs(a)
    with torch.no_grad():
        assert torch.equal(a(ids, mask), b(ids, mask))
        assert not torch.allclose(a(ids, mask), c(ids, mask))
    for name, param in a.named_parameters():
        values = param.detach()
        assert values.std() > 0.01, f"{name} was left at its init constant"
    assert weight_bytes(a) == 4 * sum(p.numel() for p in a.parameters())


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_legacy_export_matches_pytorch(tmp_path: Path, family: str) -> None:
    model = build_model(family, head="lm")
    ids, mask = example_inputs(model, padded=True)
    path = export_onnx(model, (ids, mask), tmp_path / "m.onnx", exporter="legacy")
    with torch.no_grad():
        want = model(ids, mask).numpy()
    np.testing.assert_allclose(_ort(path, ids, mask), want, rtol=1e-4, atol=1e-4)
    # symbolic axes: the same file runs at another length
    ids2, mask2 = example_inputs(model, seq_len=11)
    assert _ort(path, ids2, mask2).shape == (1, 11, 512)


def test_external_data_export(tmp_path: Path) -> None:
    model = build_model("bert")
    path = export_onnx(
        model, example_inputs(model), tmp_path / "m.onnx", "legacy", external_data=True
    )
    data = tmp_path / "m.onnx.data"
    assert data.stat().st_size >= weight_bytes(model) * 0.9  # the weights moved out
    assert path.stat().st_size < 100_000
    ids, mask = example_inputs(model)
    with torch.no_grad():
        np.testing.assert_allclose(_ort(path, ids, mask), model(ids, mask).numpy(), atol=1e-4)


def test_torch_export_program_matches_the_model() -> None:
    model = build_model("llama")
    ids, mask = example_inputs(model, batch=2, padded=True)
    program = export_torch(model, (ids, mask))
    with torch.no_grad():
        assert torch.allclose(program.module()(ids, mask), model(ids, mask), atol=1e-5)
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "aten.scaled_dot_product_attention.default" in targets


def test_unknown_exporter(tmp_path: Path) -> None:
    model = build_model("bert")
    with pytest.raises(CimcError, match="unknown ONNX exporter"):
        export_onnx(model, example_inputs(model), tmp_path / "m.onnx", exporter="tf2onnx")


def test_write_example(tmp_path: Path) -> None:
    assert {"bert-tiny", "gpt2-tiny", "llama-tiny"} <= set(EXAMPLES)
    path = write_example("gpt2-tiny", tmp_path, exporter="legacy")
    assert path == tmp_path / "gpt2-tiny.onnx" and path.is_file()


@pytest.mark.slow
def test_dynamo_export_matches_pytorch(tmp_path: Path) -> None:
    """One family here (GQA LLaMA); tests/importers exports every family with dynamo."""
    model = build_model("llama", "odd", head="lm")
    ids, mask = example_inputs(model, padded=True)
    path = export_onnx(model, (ids, mask), tmp_path / "m.onnx", exporter="dynamo")
    with torch.no_grad():
        np.testing.assert_allclose(_ort(path, ids, mask), model(ids, mask).numpy(), atol=1e-4)
