"""Write the small model of the golden-output how-to: examples/models/tiny_encoder.onnx.

    python examples/make_tiny_model.py            # rewrites the model and its inputs

A one-block transformer encoder you might have written yourself (token + position
embeddings, pre-norm attention through F.scaled_dot_product_attention, GELU MLP, a
classifier head), exported with the legacy torch.onnx exporter at a fixed shape [1, 8].
Everything is seeded, so the file's weights are the same on every run. Beside it:
tiny_encoder.calib.npz (calibration samples: 16 token-id sequences) and
tiny_encoder.inputs.npz (the inputs of the golden test).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent / "models"
VOCAB, SEQ, HIDDEN, HEADS, FFN, CLASSES = 100, 8, 32, 2, 64, 10


class TinyEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, HIDDEN)
        self.positions = nn.Parameter(0.1 * torch.randn(SEQ, HIDDEN))
        self.norm1, self.norm2 = nn.LayerNorm(HIDDEN), nn.LayerNorm(HIDDEN)
        self.qkv = nn.Linear(HIDDEN, 3 * HIDDEN)
        self.proj = nn.Linear(HIDDEN, HIDDEN)
        self.up, self.down = nn.Linear(HIDDEN, FFN), nn.Linear(FFN, HIDDEN)
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.tokens(input_ids) + self.positions
        b, s, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(HIDDEN, dim=-1)
        q, k, v = (t.reshape(b, s, HEADS, HIDDEN // HEADS).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(attended.transpose(1, 2).reshape(b, s, HIDDEN))
        x = x + self.down(F.gelu(self.up(self.norm2(x))))
        return self.head(x)


def build() -> TinyEncoder:
    torch.manual_seed(0)
    return TinyEncoder().eval()


def token_ids(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, size=(count, 1, SEQ), dtype=np.int64)


def write(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model, path = build(), folder / "tiny_encoder.onnx"
    example = torch.zeros((1, SEQ), dtype=torch.int64)
    with warnings.catch_warnings():  # the legacy exporter's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (example,), str(path), dynamo=False, input_names=["input_ids"],
            output_names=["logits"], opset_version=17,
        )  # fmt: skip
    np.savez(folder / "tiny_encoder.calib.npz", input_ids=token_ids(16, seed=1))
    np.savez(folder / "tiny_encoder.inputs.npz", input_ids=token_ids(1, seed=2)[0])
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=HERE, help="folder")
    print(f"wrote {write(parser.parse_args().output)}")


if __name__ == "__main__":
    main()
