"""Decoder models for the decode tests, exported with a symbolic sequence axis (cached)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cimc.machine.arch import Arch, load_arch

_EXPORTS: dict[tuple[object, ...], Any] = {}


def zoo_export(family: str, layers: int = 1, onnx_dir: Path | None = None) -> Any:
    """A random-weight HF LM (tiny config) exported with a dynamic sequence axis:
    torch.export by default (fast), the dynamo ONNX exporter when `onnx_dir` is given."""
    key = (family, layers, onnx_dir)
    if key not in _EXPORTS:
        from cimc.zoo import build_model, example_inputs
        from cimc.zoo.export import export_onnx, export_torch

        depth = {"n_layer": layers} if family == "gpt2" else {"num_hidden_layers": layers}
        model = build_model(family, head="lm", **depth)
        inputs = example_inputs(model, seq_len=8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if onnx_dir is None:
                _EXPORTS[key] = export_torch(model, inputs, dynamic=True)
            else:
                path = onnx_dir / f"{family}{layers}.onnx"
                _EXPORTS[key] = export_onnx(model, inputs, path, "dynamo")
    return _EXPORTS[key]


class TinyAttention(torch.nn.Module):
    """Embedding, one attention (causal or not) with a residual, an LM head: vocab 50."""

    def __init__(self, causal: bool) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.emb = torch.nn.Embedding(50, 16)
        self.qkv = torch.nn.Linear(16, 48)
        self.out = torch.nn.Linear(16, 50)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
        self.causal = causal

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(input_ids)
        q, k, v = self.qkv(x).reshape(1, -1, 3, 2, 8).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.out(y.transpose(1, 2).reshape(1, -1, 16) + x)


def tiny_export(causal: bool = True, dynamic: bool = True) -> Any:
    key = ("tiny", causal, dynamic)
    if key not in _EXPORTS:
        ids = torch.zeros(1, 6, dtype=torch.int64)
        shapes = {"input_ids": {1: torch.export.Dim("seq", max=64)}} if dynamic else None
        module = TinyAttention(causal).eval()
        _EXPORTS[key] = torch.export.export(module, (ids,), dynamic_shapes=shapes, strict=False)
    return _EXPORTS[key]


_ARCHS: dict[str, Arch] = {}


def arch(name: str) -> Arch:
    if name not in _ARCHS:
        _ARCHS[name] = load_arch(name)
    return _ARCHS[name]
