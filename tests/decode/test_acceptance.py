"""Issue 6 acceptance: GPT-2 and LLaMA-family (GQA + RoPE) random configs exported to ONNX
with a dynamic sequence axis (dynamo exporter), 8 decode steps after a prompt of 5:
bit-exact logits at every step, greedy tokens equal to the golden's, float agreement."""

from __future__ import annotations

from pathlib import Path

import pytest

from cimc.decode.generate import generate
from cimc.decode.programs import build_decoder, load_decoder
from tests.decode.decode_helpers import arch, zoo_export

PROMPT = [11, 200, 3, 77, 140]
NEW_TOKENS = 9  # one from prefill + 8 decode steps


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen2"])
def test_prompt_5_then_8_decode_steps(
    family: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    onnx_path = zoo_export(family, layers=2, onnx_dir=tmp_path_factory.mktemp(family))
    assert isinstance(onnx_path, Path)
    dm = load_decoder(onnx_path, len(PROMPT) + NEW_TOKENS)
    for arch_name in ("tiny", "default"):
        progs = build_decoder(onnx_path, arch(arch_name), len(PROMPT), dm.capacity, loaded=dm)
        result = generate(progs, PROMPT, NEW_TOKENS)
        assert len(result.steps) == NEW_TOKENS and result.steps[-1].position == 12
        assert [s.mismatched for s in result.steps] == [0] * NEW_TOKENS, arch_name
        assert result.tokens == result.golden_tokens and result.bit_exact
        agreement = result.float_agreement
        assert agreement is not None
        print(f"{family} on {arch_name}: tokens {result.tokens}, float agreement {agreement:.0%}")
