"""Additive attention biases beyond T5's: ALiBi (slopes x key distance, a constant once
shapes are static) and a bias computed at run time (requantized to the logits' step), with
a padding mask, bit-exact on `tiny` and `default`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cimc.api import import_model
from cimc.ir.ops import Attention
from cimc.reference.float_model import run_graph
from tests.e2e.e2e_helpers import ARCHS, compile_and_verify

S, D, H = 8, 32, 4


class BiasedAttention(torch.nn.Module):
    def __init__(self, runtime: bool) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.qkv = torch.nn.Linear(D, 3 * D)
        self.out = torch.nn.Linear(D, D)
        self.pair = torch.nn.Linear(D, D)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        self.runtime = runtime

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, H, D // H).permute(2, 0, 3, 1, 4)
        if self.runtime:  # a bias from the input itself: [B, 1, S, S]
            y = self.pair(x)
            bias = (y @ x.transpose(1, 2) / math.sqrt(D)).unsqueeze(1)
        else:  # ALiBi: -slope_h * (i - j)
            slopes = 2.0 ** (-8.0 * torch.arange(1, H + 1) / H)
            pos = torch.arange(s)
            bias = -slopes.view(H, 1, 1) * (pos.view(s, 1) - pos.view(1, s)).abs()
            bias = bias.unsqueeze(0)
        keep = attention_mask.bool().view(b, 1, 1, s)
        mask = torch.where(keep, 0.0, torch.finfo(torch.float32).min) + bias
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, s, D))


@pytest.mark.parametrize("arch_name", ARCHS)
@pytest.mark.parametrize("runtime", [False, True], ids=["alibi", "runtime-bias"])
def test_biased_attention_bit_exact(runtime: bool, arch_name: str) -> None:
    module = BiasedAttention(runtime).eval()
    x = torch.randn(2, S, D, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, S, dtype=torch.int64)
    mask[1, -3:] = 0
    graph = import_model(module, example_inputs=(x, mask))
    attention = next(n for n in graph.nodes() if isinstance(n.op, Attention))
    assert attention.op.bias and attention.op.mask_index(len(attention.inputs)) == 3
    bias_op = graph.node(attention.inputs[-1]).op.NAME
    assert (bias_op != "constant") == runtime
    feeds = {"x": x.numpy(), "attention_mask": mask.numpy()}
    with torch.no_grad():
        want = module(x, mask).numpy()
    got = next(iter(run_graph(graph, feeds).values()))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    result, report = compile_and_verify(graph, arch_name, feeds)
    assert report.bit_exact, report.divergence
    assert report.cosine_vs_float > 0.99
    q = next(n for n in result.graph.nodes() if n.op.NAME == "q.attention")
    kind = result.graph.node(q.inputs[-1]).op.NAME
    assert kind == ("q.requant" if runtime else "q.constant")
