"""Random transformer-like torch modules and random valid arch presets, from one seed.

    spec = random_spec(seed)            # a ModelSpec: dims, heads, norms, activations...
    module = build_module(spec)         # a seeded torch.nn.Module taking x (batch, S, D)
    arch = random_arch(seed)            # tiny/default with random cores, macros, buffers

Weights come from a numpy generator seeded by the spec, so a case is the same on every
machine. Dims are drawn so that many are not multiples of any macro size.
"""

from __future__ import annotations

import math
import random
import tomllib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from cimc.machine.arch import Arch, arch_from_dict
from cimc.resources import isa_dir

ACTIVATIONS = ("gelu", "gelu-tanh", "silu", "relu")
NORMS = ("layernorm", "rmsnorm")
MASKS = ("none", "causal", "padding")


@dataclass(frozen=True)
class ModelSpec:
    seed: int
    seq: int
    heads: int
    kv_heads: int  # divides heads (GQA when smaller)
    head_dim: int
    ffn: int
    activation: str
    gated: bool  # LLaMA-style gate * up
    norm: str
    pre_norm: bool
    final_norm: bool
    rotary: bool
    mask: str
    pad: int  # padded positions at the end (mask == "padding")
    blocks: int
    sdpa: bool  # F.scaled_dot_product_attention vs explicit softmax(QK^T)V
    head_out: int  # output projection width (0: none)
    interleave: bool = False  # GQA by repeat_interleave (torch.export only) instead of expand
    batch: int = (
        1  # leading axis of x; never drawn (dataclasses.replace it): seeds keep their specs
    )

    @property
    def hidden(self) -> int:
        return self.heads * self.head_dim

    def describe(self) -> str:
        return " ".join(f"{k}={v}" for k, v in asdict(self).items())


def random_spec(seed: int) -> ModelSpec:
    rng = random.Random(seed)
    heads = rng.choice((1, 2, 3, 4))
    kv = rng.choice([k for k in range(1, heads + 1) if heads % k == 0])
    head_dim = rng.choice((4, 6, 8, 10, 12, 16, 20))
    seq = rng.randint(2, 12)
    mask = rng.choice(MASKS)
    return ModelSpec(
        seed=seed,
        seq=seq,
        heads=heads,
        kv_heads=kv,
        head_dim=head_dim,
        ffn=rng.randint(8, 100),
        activation=rng.choice(ACTIVATIONS),
        gated=rng.random() < 0.3,
        norm=rng.choice(NORMS),
        pre_norm=rng.random() < 0.6,
        final_norm=rng.random() < 0.5,
        rotary=rng.random() < 0.4,
        mask=mask,
        pad=rng.randint(1, seq - 1) if mask == "padding" else 0,
        blocks=rng.choice((1, 1, 2)),
        sdpa=rng.random() < 0.5,
        head_out=rng.choice((0, 0, rng.randint(3, 40))),
        interleave=rng.random() < 0.3,  # drawn last: earlier draws keep their seeds
    )


def _init(module: nn.Module, rng: np.random.Generator) -> None:
    """Weights ~ N(0, 1/sqrt(fan_in)), biases and norm gains near their defaults."""
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            if name.endswith("weight") and p.dim() == 2:
                arr = rng.normal(0, p.shape[1] ** -0.5, tuple(p.shape))
            elif "norm" in name and name.endswith("weight"):
                arr = 1 + rng.normal(0, 0.1, tuple(p.shape))
            else:
                arr = rng.normal(0, 0.05, tuple(p.shape))
            p.copy_(torch.from_numpy(arr.astype(np.float32)))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _norm(spec: ModelSpec) -> nn.Module:
    if spec.norm == "layernorm":
        return nn.LayerNorm(spec.hidden)
    return RMSNorm(spec.hidden)


def _act(kind: str) -> nn.Module:
    return {
        "gelu": nn.GELU(),
        "gelu-tanh": nn.GELU(approximate="tanh"),
        "silu": nn.SiLU(),
        "relu": nn.ReLU(),
    }[kind]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    cos: torch.Tensor  # buffers (typed for mypy)
    sin: torch.Tensor
    bias: torch.Tensor

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        d, hd = spec.hidden, spec.head_dim
        self.q = nn.Linear(d, spec.heads * hd)
        self.k = nn.Linear(d, spec.kv_heads * hd)
        self.v = nn.Linear(d, spec.kv_heads * hd)
        self.o = nn.Linear(spec.heads * hd, d)
        pos = torch.arange(spec.seq, dtype=torch.float32)[:, None]
        inv = 10000.0 ** (-torch.arange(0, hd // 2, dtype=torch.float32) * 2 / hd)
        angles = torch.cat((pos * inv, pos * inv), dim=-1)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        self.register_buffer("bias", _mask_bias(spec), persistent=False)

    def _split(self, t: torch.Tensor, heads: int) -> torch.Tensor:
        return t.view(self.spec.batch, self.spec.seq, heads, self.spec.head_dim).transpose(1, 2)

    def _repeat_kv(self, t: torch.Tensor) -> torch.Tensor:
        """GQA the way Hugging Face LLaMA writes it (expand + reshape)."""
        s = self.spec
        rep = s.heads // s.kv_heads
        if s.interleave:
            return t.repeat_interleave(rep, dim=1)
        t = t[:, :, None, :, :].expand(s.batch, s.kv_heads, rep, s.seq, s.head_dim)
        return t.reshape(s.batch, s.heads, s.seq, s.head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.spec
        q, k = self._split(self.q(x), s.heads), self._split(self.k(x), s.kv_heads)
        v = self._split(self.v(x), s.kv_heads)
        if s.rotary and s.head_dim % 2 == 0:
            q = q * self.cos + _rotate_half(q) * self.sin
            k = k * self.cos + _rotate_half(k) * self.sin
        if s.kv_heads != s.heads:
            k, v = self._repeat_kv(k), self._repeat_kv(v)
        if s.sdpa:
            mask = None if s.mask == "none" else self.bias
            out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            scores = q @ k.transpose(-1, -2) / math.sqrt(s.head_dim)
            if s.mask != "none":
                scores = scores + self.bias
            out = scores.softmax(-1) @ v
        return self.o(out.transpose(1, 2).reshape(s.batch, s.seq, s.heads * s.head_dim))


def _mask_bias(spec: ModelSpec) -> torch.Tensor:
    """Additive float mask (S, S): causal, or the last `pad` keys masked out."""
    bias = torch.zeros(spec.seq, spec.seq)
    if spec.mask == "causal":
        bias = torch.full((spec.seq, spec.seq), -1e4).triu(1)
    elif spec.mask == "padding":
        bias[:, spec.seq - spec.pad :] = -1e4
    return bias


class MLP(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.up = nn.Linear(spec.hidden, spec.ffn)
        self.gate = nn.Linear(spec.hidden, spec.ffn) if spec.gated else None
        self.down = nn.Linear(spec.ffn, spec.hidden)
        self.act = _act(spec.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            return self.down(self.act(self.gate(x)) * self.up(x))
        return self.down(self.act(self.up(x)))


class Block(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.pre_norm = spec.pre_norm
        self.attn, self.mlp = Attention(spec), MLP(spec)
        self.norm1, self.norm2 = _norm(spec), _norm(spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))


class RandomTransformer(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(spec) for _ in range(spec.blocks))
        self.norm = _norm(spec) if spec.final_norm else None
        self.head = nn.Linear(spec.hidden, spec.head_out) if spec.head_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        if self.norm is not None:
            x = self.norm(x)
        return self.head(x) if self.head is not None else x


def build_module(spec: ModelSpec) -> nn.Module:
    module = RandomTransformer(spec).eval()
    _init(module, np.random.default_rng(spec.seed))
    return module


def example_input(spec: ModelSpec) -> np.ndarray:
    rng = np.random.default_rng(spec.seed + 1)
    return rng.normal(0, 1, (spec.batch, spec.seq, spec.hidden)).astype(np.float32)


def _preset(name: str) -> dict[str, Any]:
    return tomllib.loads((isa_dir() / "arch" / f"{name}.toml").read_text(encoding="utf-8"))


def random_arch_dict(seed: int) -> dict[str, Any]:
    """tiny or default with random cores/mesh, macro count and shape, buffer sizes."""
    rng = random.Random(seed * 7919 + 17)
    data = _preset(rng.choice(("tiny", "default")))
    cores = rng.choice((1, 2, 3, 4, 6))
    mx = rng.choice([m for m in range(1, cores + 1) if cores % m == 0])
    rows, cols = rng.choice((16, 32, 64, 128)), rng.choice((16, 32, 64, 128))
    data["name"] = f"random-{seed}"
    data["chip"].update(cores=cores, mesh=[mx, cores // mx])
    data["core"]["macros"] = rng.choice((1, 2, 4, 8, 16))
    data["core"]["vector_lanes"] = rng.choice((4, 8, 16, 64))
    data["macro"].update(rows=rows, cols=cols, write_bits_per_cycle=8 * cols)
    # the backend stages two weight tiles in the scratchpad (lower_linear._token_chunks)
    fits = [kib for kib in (16, 32, 64, 256) if kib * 1024 >= 3 * rows * cols + 8192]
    data["core"]["scratchpad_bytes"] = rng.choice(fits) * 1024
    data["memory"]["gb_bytes"] = rng.choice((64, 256, 4096)) * 1024
    return data


def random_arch(seed: int) -> Arch:
    return arch_from_dict(random_arch_dict(seed), f"<random arch {seed}>")
