"""Random-weight Hugging Face transformers built from configs (no hub access needed).

Each family has a tiny default config (fast tests) and named size presets; any config
field can be overridden.  `build_model` returns an eval-mode torch module whose forward
takes ``(input_ids, attention_mask)`` and returns one tensor: the last hidden states, or
the LM logits when ``head="lm"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from cimc.errors import CimcError

HEADS = ("hidden", "lm")


@dataclass(frozen=True)
class Family:
    """One transformers model family: its config class, base model and LM-head model
    (`lm_cls` None: the family has no LM head that takes only token ids, e.g. T5's)."""

    name: str
    config_cls: str
    base_cls: str
    lm_cls: str | None
    decoder: bool
    tiny: dict[str, Any]
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    pad_positions: bool = False  # position ids count the tokens that are not padding


# LLaMA and Qwen2 share the tiny shape (GQA: 4 query heads over 2 kv heads).
_LLAMA_LIKE_TINY = {
    "vocab_size": 512,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 160,
    "max_position_embeddings": 128,
}

_ROBERTA_TINY = {
    "vocab_size": 512,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "max_position_embeddings": 80,  # positions run from pad_token_id + 1 = 2
    "type_vocab_size": 1,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}

_ODD = {"hidden_size": 96, "num_attention_heads": 3, "intermediate_size": 250}

FAMILIES: dict[str, Family] = {
    "bert": Family(
        name="bert",
        config_cls="BertConfig",
        base_cls="BertModel",
        lm_cls="BertForMaskedLM",
        decoder=False,
        tiny={
            "vocab_size": 512,
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            "max_position_embeddings": 64,
            "type_vocab_size": 2,
        },
        presets={
            "odd": _ODD,
            "base": {
                "vocab_size": 30522,
                "hidden_size": 768,
                "num_hidden_layers": 12,
                "num_attention_heads": 12,
                "intermediate_size": 3072,
                "max_position_embeddings": 512,
            },
        },
    ),
    "distilbert": Family(
        name="distilbert",
        config_cls="DistilBertConfig",
        base_cls="DistilBertModel",
        lm_cls="DistilBertForMaskedLM",
        decoder=False,
        tiny={
            "vocab_size": 512,
            "dim": 64,
            "n_layers": 2,
            "n_heads": 4,
            "hidden_dim": 128,
            "max_position_embeddings": 64,
        },
        presets={"odd": {"dim": 96, "n_heads": 3, "hidden_dim": 250}},
    ),
    "gpt2": Family(
        name="gpt2",
        config_cls="GPT2Config",
        base_cls="GPT2Model",
        lm_cls="GPT2LMHeadModel",
        decoder=True,
        tiny={
            "vocab_size": 512,
            "n_embd": 64,
            "n_layer": 2,
            "n_head": 4,
            "n_positions": 64,
            # GPT-2's <|endoftext|> is its last id (50256 of 50257); keep it in the vocab
            "bos_token_id": 511,
            "eos_token_id": 511,
        },
        presets={
            "odd": {"n_embd": 96, "n_head": 3, "n_inner": 250},
            "relu": {"n_inner": 256, "activation_function": "relu"},  # OPT-style FFN
        },
    ),
    "llama": Family(
        name="llama",
        config_cls="LlamaConfig",
        base_cls="LlamaModel",
        lm_cls="LlamaForCausalLM",
        decoder=True,
        tiny=_LLAMA_LIKE_TINY,
        presets={"odd": {**_ODD, "num_key_value_heads": 1}},
    ),
    "qwen2": Family(
        name="qwen2",
        config_cls="Qwen2Config",
        base_cls="Qwen2Model",
        lm_cls="Qwen2ForCausalLM",
        decoder=True,
        tiny=_LLAMA_LIKE_TINY,
        presets={"odd": {**_ODD, "num_key_value_heads": 1}},
    ),
    # RoBERTa-style encoders: position ids from the padding (cumsum over ids != pad_token_id,
    # times that mask, plus pad_token_id), hence positions up to seq + pad + 1
    "roberta": Family(
        name="roberta",
        config_cls="RobertaConfig",
        base_cls="RobertaModel",
        lm_cls="RobertaForMaskedLM",
        decoder=False,
        tiny=_ROBERTA_TINY,
        presets={"odd": _ODD},
        pad_positions=True,
    ),
    "xlm-roberta": Family(
        name="xlm-roberta",
        config_cls="XLMRobertaConfig",
        base_cls="XLMRobertaModel",
        lm_cls="XLMRobertaForMaskedLM",
        decoder=False,
        tiny=_ROBERTA_TINY,
        presets={"odd": _ODD},
        pad_positions=True,
    ),
    "camembert": Family(
        name="camembert",
        config_cls="CamembertConfig",
        base_cls="CamembertModel",
        lm_cls="CamembertForMaskedLM",
        decoder=False,
        tiny=_ROBERTA_TINY,
        presets={"odd": _ODD},
        pad_positions=True,
    ),
    # T5's encoder: RMS norms without bias, relative position buckets turned into an additive
    # attention bias (a constant once shapes are static), unscaled scores
    "t5": Family(
        name="t5",
        config_cls="T5Config",
        base_cls="T5EncoderModel",
        lm_cls=None,
        decoder=False,
        tiny={
            "vocab_size": 512,
            "d_model": 64,
            "d_kv": 16,
            "d_ff": 128,
            "num_layers": 2,
            "num_heads": 4,
            "relative_attention_num_buckets": 32,
            "relative_attention_max_distance": 64,
        },
        presets={
            "odd": {"d_model": 96, "num_heads": 3, "d_kv": 32, "d_ff": 250},
            "gated": {"feed_forward_proj": "gated-gelu"},  # T5 v1.1 / flan-t5
        },
    ),
}

# Attention implementations that export: sdpa (default), eager (needed for opset 13).
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")


class HiddenStates(torch.nn.Module):
    """Wraps a HF model so that forward returns one plain tensor (exporters prefer it)."""

    def __init__(self, model: torch.nn.Module, head: str) -> None:
        super().__init__()
        self.model = model
        self.head = head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        return out.logits if self.head == "lm" else out.last_hidden_state


def family(name: str) -> Family:
    """The family called `name`, or a CimcError listing the known ones."""
    if name not in FAMILIES:
        known = ", ".join(sorted(FAMILIES))
        raise CimcError(f"unknown model family {name!r}; known families: {known}", "zoo")
    return FAMILIES[name]


def make_config(name: str, preset: str = "tiny", **overrides: Any) -> Any:
    """The transformers config of family `name`: tiny defaults, a preset, then overrides."""
    import transformers

    fam = family(name)
    if preset != "tiny" and preset not in fam.presets:
        known = ", ".join(["tiny", *sorted(fam.presets)])
        raise CimcError(f"family {name!r} has no preset {preset!r}; known: {known}", "zoo")
    attn = overrides.pop("attn_implementation", ATTENTION_IMPLEMENTATIONS[0])
    if attn not in ATTENTION_IMPLEMENTATIONS:
        known = ", ".join(ATTENTION_IMPLEMENTATIONS)
        raise CimcError(f"attn_implementation {attn!r} is not one of {known}", "zoo")
    fields = {**fam.tiny, **fam.presets.get(preset, {}), **overrides}
    cls = getattr(transformers, fam.config_cls)
    config = cls(**fields)
    config.use_cache = False  # no KV-cache outputs: one tensor out, static graph
    config._attn_implementation = attn
    return config


def build_model(
    name: str, preset: str = "tiny", head: str = "hidden", seed: int = 0, **overrides: Any
) -> HiddenStates:
    """An eval-mode random-weight model of family `name` returning one tensor.

    `head` is ``"hidden"`` (last hidden states) or ``"lm"`` (vocabulary logits).
    Weights are drawn from torch's generator seeded with `seed` (deterministic).
    """
    import transformers

    if head not in HEADS:
        raise CimcError(f"unknown head {head!r}; use one of {', '.join(HEADS)}", "zoo")
    fam = family(name)
    if head == "lm" and fam.lm_cls is None:
        raise CimcError(f"family {name!r} has no LM head here; use head='hidden'", "zoo")
    config = make_config(name, preset, **overrides)
    torch.manual_seed(seed)
    cls = getattr(transformers, fam.lm_cls if head == "lm" and fam.lm_cls else fam.base_cls)
    model = cls(config)
    randomize_parameters(model, seed)
    model.eval()
    return HiddenStates(model, head).eval()


def randomize_parameters(model: torch.nn.Module, seed: int) -> None:
    """Redraw every parameter so biases and norm scales are not the init's 0 and 1.

    HF init leaves biases at zero and norm weights at one; exporters then deduplicate
    them and a wrong importer (a dropped bias, a swapped scale) would go unnoticed.
    """
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            noise = torch.randn(param.shape, generator=gen, dtype=param.dtype)
            if param.ndim == 1 and name.endswith("weight"):
                param.copy_(1.0 + 0.1 * noise)  # norm scales
            elif param.ndim == 1:
                param.copy_(0.05 * noise)  # biases
            else:
                param.copy_(0.05 * noise)


def example_inputs(
    model: HiddenStates, batch: int = 1, seq_len: int = 7, seed: int = 0, padded: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and an attention mask for `model`; `padded` zeroes the last mask entry
    (and, in families whose positions skip padding, makes the last token the pad token)."""
    config: Any = model.model.config
    vocab = int(config.vocab_size)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq_len), generator=gen, dtype=torch.int64)
    mask = torch.ones((batch, seq_len), dtype=torch.int64)
    if padded:
        mask[:, -1] = 0
        kind = FAMILIES.get(str(getattr(config, "model_type", "")).replace("_", "-"))
        if kind is not None and kind.pad_positions:
            ids[:, -1] = int(config.pad_token_id)  # padding takes no position (RoBERTa)
    return ids, mask


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes held by the model's parameters (tied weights counted once)."""
    seen: dict[int, int] = {}
    for param in model.parameters():
        seen[param.data_ptr()] = param.numel() * param.element_size()
    return sum(seen.values())
