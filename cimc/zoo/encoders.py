"""Random-weight Hugging Face encoders whose input is not token ids: ViT (images, a patch
convolution) and Whisper's audio encoder (log-mel frames, two 1-D convolutions).

    model = build_encoder("vit", "tiny")        # eval mode, forward(x) -> last hidden state
    x = encoder_input(model)                    # [1, 3, 32, 32] for ViT, [1, 16, 32] for Whisper

Built from configs (no hub access); every parameter redrawn from a seeded generator as the
text families are (cimc/zoo/models.py), so biases and norm scales are not 0 and 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cimc.errors import CimcError

_ODD = {"hidden_size": 96, "num_attention_heads": 3, "intermediate_size": 250}


@dataclass(frozen=True)
class Encoder:
    config_cls: str
    tiny: dict[str, Any]
    presets: dict[str, dict[str, Any]]


ENCODERS: dict[str, Encoder] = {
    "vit": Encoder(
        "ViTConfig",
        {
            "image_size": 32,
            "patch_size": 8,
            "num_channels": 3,
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 128,
        },
        {"odd": _ODD},
    ),
    "whisper": Encoder(
        "WhisperConfig",
        {
            "d_model": 64,
            "encoder_layers": 2,
            "encoder_attention_heads": 4,
            "encoder_ffn_dim": 128,
            "num_mel_bins": 16,
            "max_source_positions": 16,  # 32 input frames (the second conv has stride 2)
            "decoder_layers": 1,
            "decoder_attention_heads": 4,
            "decoder_ffn_dim": 128,
            "vocab_size": 128,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "decoder_start_token_id": 1,
        },
        {"odd": {"d_model": 96, "encoder_attention_heads": 3, "encoder_ffn_dim": 250}},
    ),
}


class LastHidden(torch.nn.Module):
    """An encoder whose forward returns the last hidden state as one tensor."""

    def __init__(self, model: torch.nn.Module, kind: str) -> None:
        super().__init__()
        self.model = model
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, return_dict=True).last_hidden_state


def build_encoder(kind: str, preset: str = "tiny", seed: int = 0, **overrides: Any) -> LastHidden:
    """An eval-mode random-weight ViT or Whisper encoder; `overrides` go to the config
    (`num_layers` sets the depth of either)."""
    import transformers

    from cimc.zoo.models import randomize_parameters

    if kind not in ENCODERS:
        raise CimcError(f"unknown encoder {kind!r}; known: {', '.join(sorted(ENCODERS))}", "zoo")
    spec = ENCODERS[kind]
    if preset != "tiny" and preset not in spec.presets:
        known = ", ".join(["tiny", *sorted(spec.presets)])
        raise CimcError(f"encoder {kind!r} has no preset {preset!r}; known: {known}", "zoo")
    fields = {**spec.tiny, **spec.presets.get(preset, {}), **overrides}
    layers = fields.pop("num_layers", None)
    if layers is not None:
        fields["num_hidden_layers" if kind == "vit" else "encoder_layers"] = layers
    config = getattr(transformers, spec.config_cls)(**fields)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    if kind == "vit":
        model: torch.nn.Module = transformers.ViTModel(config, add_pooling_layer=False)
    else:
        model = transformers.WhisperModel(config).encoder
    randomize_parameters(model, seed)
    return LastHidden(model.eval(), kind).eval()


def encoder_input(model: LastHidden, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A seeded input of the encoder's shape: an image or a block of mel frames."""
    config: Any = model.model.config
    gen = torch.Generator().manual_seed(seed)
    if model.kind == "vit":
        side = int(config.image_size)
        shape: tuple[int, ...] = (batch, int(config.num_channels), side, side)
    else:
        shape = (batch, int(config.num_mel_bins), 2 * int(config.max_source_positions))
    return torch.randn(shape, generator=gen)
