"""OPT-style random-weight LMs: pre-LN decoder blocks, learned positions, ReLU FFNs whose
biases are shifted so that most FFN activations are exactly zero, as in trained OPT models
(OPT-6.7B: ~97% of its FFN activations are zero after the ReLU, "LLM in a flash").

The architecture is Hugging Face GPT-2's with `activation_function="relu"`: the same
block as OPT (OPT's own export computes positions with a cumsum, which cimc does not
import). Random weights give about half the pre-activations below zero; `shift_ffn_biases`
lowers each layer's up-projection bias by the `zero_fraction` quantile of its
pre-activations on random tokens, layer after layer (each layer sees the shifted ones
before it), so about that fraction of the layer's ReLU outputs is 0.

    model = relu_lm(hidden=256, layers=2, ffn=1024, vocab=512, zero_fraction=0.9)
"""

from __future__ import annotations

from typing import Any

import torch

from cimc.zoo.models import HiddenStates, build_model

SHIFT_TOKENS = 256  # random tokens the quantiles are measured on


def relu_lm(
    hidden: int = 64,
    layers: int = 2,
    ffn: int = 256,
    vocab: int = 512,
    heads: int = 4,
    positions: int = 64,
    zero_fraction: float = 0.9,
    seed: int = 0,
) -> HiddenStates:
    """A GPT-2-shaped LM with ReLU FFNs, biases shifted to `zero_fraction` zeros."""
    model = build_model(
        "gpt2",
        head="lm",
        seed=seed,
        n_embd=hidden,
        n_layer=layers,
        n_head=heads,
        n_inner=ffn,
        vocab_size=vocab,
        n_positions=positions,
        activation_function="relu",
        bos_token_id=vocab - 1,
        eos_token_id=vocab - 1,
    )
    shift_ffn_biases(model, zero_fraction, seed)
    return model


def shift_ffn_biases(model: HiddenStates, zero_fraction: float, seed: int = 0) -> None:
    """Shift every block's up-projection bias so `zero_fraction` of its outputs are < 0."""
    config: Any = model.model.config
    gen = torch.Generator().manual_seed(seed + 7)
    rows = max(1, SHIFT_TOKENS // config.n_positions)
    ids = torch.randint(0, config.vocab_size, (rows, config.n_positions), generator=gen)
    for block in _blocks(model):
        q = torch.quantile(_pre_activations(model, block, ids).double(), zero_fraction)
        with torch.no_grad():
            block.mlp.c_fc.bias -= q.float()


def _blocks(model: HiddenStates) -> list[Any]:
    """The decoder blocks (HF modules, typed loosely by transformers)."""
    inner: Any = model.model
    return list(inner.transformer.h)


def _pre_activations(model: HiddenStates, block: Any, ids: torch.Tensor) -> torch.Tensor:
    """The block's up-projection outputs on `ids`, flattened."""
    seen: list[torch.Tensor] = []
    hook = block.mlp.c_fc.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    with torch.no_grad():
        model(ids, torch.ones_like(ids))
    hook.remove()
    return seen[0].flatten()


def zero_share(model: HiddenStates, ids: torch.Tensor) -> list[float]:
    """Per block, the share of its ReLU outputs that are exactly zero on `ids`."""
    shares: list[float] = []
    hooks = [
        block.mlp.act.register_forward_hook(
            lambda m, i, o: shares.append(float((o == 0).double().mean()))
        )
        for block in _blocks(model)
    ]
    with torch.no_grad():
        model(ids, torch.ones_like(ids))
    for hook in hooks:
        hook.remove()
    return shares
