"""Idioms as torch programs spell them: the torch importer translates them op by op and
the `idioms` pass recognizes them (cimc.import_model runs both)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cimc.api import import_model
from cimc.importers.torch_shape_ops import index_range
from cimc.ir import Graph
from cimc.ir.ops import Attention
from cimc.reference.float_model import FloatModel


def imported(module: nn.Module, *inputs: torch.Tensor) -> Graph:
    """Import `module`, and check the graph computes what the module computes."""
    graph = import_model(module, inputs)
    names = [n.name for n in graph.input_nodes()]
    got = FloatModel(graph).run({n: t.numpy() for n, t in zip(names, inputs, strict=True)})
    with torch.no_grad():
        want = module(*inputs).numpy()
    np.testing.assert_allclose(got["output"], want, rtol=1e-5, atol=1e-5)
    return graph


def ops(graph: Graph) -> Counter[str]:
    return Counter(n.op.NAME for n in graph.nodes() if n.op.NAME not in ("input", "constant"))


def attention_node(graph: Graph):
    (att,) = [n for n in graph.nodes() if isinstance(n.op, Attention)]
    return att


class Lambda(nn.Module):
    def __init__(self, fn, **params: torch.Tensor) -> None:
        super().__init__()
        self.fn = fn
        for name, value in params.items():
            self.register_buffer(name, value)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.fn(self, *args)


X = torch.randn(2, 5, 16)
GAMMA = torch.rand(16) + 0.5


@pytest.mark.parametrize(
    "fn",
    [
        lambda m, x: m.w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)),
        lambda m, x: x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6) * m.w,
    ],
)
def test_rms_norm(fn) -> None:
    graph = imported(Lambda(fn, w=GAMMA), X)
    assert ops(graph) == {"rms_norm": 1}
    (norm,) = [n for n in graph.nodes() if n.op.NAME == "rms_norm"]
    assert norm.op.eps == float(np.float32(1e-6))  # the f32 constant's value


@pytest.mark.parametrize(
    "fn, approximate",
    [
        (
            lambda m, x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
            "tanh",
        ),
        (lambda m, x: x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0))), "none"),
        (lambda m, x: x * (1.0 + torch.erf(x * (1 / math.sqrt(2.0)))) * 0.5, "none"),
        (lambda m, x: F.gelu(x, approximate="tanh"), "tanh"),
    ],
)
def test_gelu(fn, approximate: str) -> None:
    graph = imported(Lambda(fn), X)
    assert ops(graph) == {"gelu": 1}
    assert next(n for n in graph.nodes() if n.op.NAME == "gelu").op.approximate == approximate


def test_silu_and_a_near_miss() -> None:
    assert ops(imported(Lambda(lambda m, x: x * torch.sigmoid(x)), X)) == {"silu": 1}
    # sigmoid of another value is not SiLU
    near = imported(Lambda(lambda m, x: x * torch.sigmoid(x + 1.0)), X)
    assert ops(near) == {"add": 1, "sigmoid": 1, "mul": 1}


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotary_fn(m: nn.Module, q: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(q.shape[2], dtype=torch.float32)
    freqs = positions[:, None] * m.inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, None], emb.sin()[None, None]
    return q * cos + rotate_half(q) * sin


def test_rotary() -> None:
    inv_freq = 1.0 / (10000 ** (torch.arange(0, 8, 2).float() / 8))
    graph = imported(Lambda(rotary_fn, inv_freq=inv_freq), torch.randn(1, 2, 6, 8))
    assert ops(graph) == {"rotary": 1}
    rot = next(n for n in graph.nodes() if n.op.NAME == "rotary")
    assert graph.node(rot.inputs[1]).type.shape == (6, 8)  # cos as a [S, D] table


def sdpa_module(mask_fn=None, n_rep: int = 1, **kw):
    def fn(m: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, am: torch.Tensor):
        if n_rep > 1:  # HF repeat_kv
            b, h, s, d = k.shape
            k = k[:, :, None].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)
            v = v[:, :, None].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)
        mask = None if mask_fn is None else mask_fn(am)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **kw)

    return Lambda(fn)


Q, K, V = torch.randn(2, 4, 6, 8), torch.randn(2, 4, 6, 8), torch.randn(2, 4, 6, 8)
AM = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])


@pytest.mark.parametrize(
    "mask_fn",
    [
        lambda am: (1.0 - am[:, None, None, :].float()) * torch.finfo(torch.float32).min,
        lambda am: torch.where(am[:, None, None, :].bool(), 0.0, float("-inf")),
        lambda am: am[:, None, None, :].bool(),
    ],
)
def test_masks_become_boolean(mask_fn) -> None:
    graph = imported(sdpa_module(mask_fn), Q, K, V, AM)
    att = attention_node(graph)
    mask = graph.node(att.inputs[3])
    assert mask.type.dtype.value == "bool" and mask.type.shape == (2, 1, 1, 6)
    assert ops(graph) == {"attention": 1, "cast": 1, "reshape": 1}


def test_causal_triangle_becomes_flag() -> None:
    causal = torch.tril(torch.ones(6, 6, dtype=torch.bool))
    graph = imported(sdpa_module(lambda am: causal & am[:, None, None, :].bool()), Q, K, V, AM)
    att = attention_node(graph)
    assert att.op.causal and len(att.inputs) == 4
    graph = imported(sdpa_module(is_causal=True), Q, K, V, AM)
    att = attention_node(graph)
    assert att.op.causal and len(att.inputs) == 3
    assert att.op.scale == pytest.approx(1 / math.sqrt(8))


def test_is_causal_with_fewer_queries_keeps_torch_alignment() -> None:
    q = torch.randn(2, 4, 3, 8)
    graph = imported(sdpa_module(is_causal=True, scale=0.5), q, K, V, AM)
    att = attention_node(graph)
    assert not att.op.causal and att.op.scale == 0.5
    tri = graph.node(att.inputs[3]).op.value  # torch's top-left triangle, explicit
    assert tri.tolist() == np.tril(np.ones((3, 6), dtype=bool)).tolist()


def test_repeat_kv_is_undone() -> None:
    k, v = torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 8)
    graph = imported(sdpa_module(n_rep=2), Q, k, v, AM)
    att = attention_node(graph)
    assert [graph.node(i).type.shape[1] for i in att.inputs[:3]] == [4, 2, 2]
    assert ops(graph) == {"attention": 1}
    gqa = imported(sdpa_module(enable_gqa=True), Q, k, v, AM)
    assert [gqa.node(i).type.shape[1] for i in attention_node(gqa).inputs[:3]] == [4, 2, 2]


def test_flattened_linear_is_a_linear_on_the_nd_value() -> None:
    w, b = torch.randn(16, 24), torch.randn(24)  # GPT-2 Conv1D: addmm on a [B*S, K] view
    fn = lambda m, x: torch.addmm(m.b, x.view(-1, 16), m.w).view(2, 5, 24)  # noqa: E731
    graph = imported(Lambda(fn, w=w, b=b), X)
    assert ops(graph) == {"linear": 1}
    (lin,) = [n for n in graph.nodes() if n.op.NAME == "linear"]
    assert lin.type.shape == (2, 5, 24) and len(lin.inputs) == 3


def test_linear_weight_is_transposed_to_kn() -> None:
    layer = nn.Linear(16, 24)
    graph = imported(layer, X)
    (lin,) = [n for n in graph.nodes() if n.op.NAME == "linear"]
    np.testing.assert_array_equal(
        graph.node(lin.inputs[1]).op.value, layer.weight.detach().T.numpy()
    )


def test_runtime_weight_is_a_matmul() -> None:
    graph = imported(Lambda(lambda m, x, y: F.linear(x, y)), X, torch.randn(7, 16))
    assert ops(graph) == {"transpose": 1, "matmul": 1}


def test_in_place_ops_are_functionalized() -> None:
    def fn(m: nn.Module, x: torch.Tensor, am: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        y.add_(1.0)
        y[:, :2].mul_(2.0)  # mutation through a view
        return y.masked_fill(am[:, :, None] == 0, 0.0)

    graph = imported(Lambda(fn), X, torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]))
    assert "where" in ops(graph)


def test_no_grad_region_with_runtime_inputs_is_inlined() -> None:
    def fn(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            y = torch.tanh(x) * 3.0
        return y + x

    assert ops(imported(Lambda(fn), X)) == {"tanh": 1, "mul": 1, "add": 1}


def test_index_range() -> None:
    assert index_range(np.arange(6).reshape(1, 1, 1, 6), 6, (2, 1, 1, 6)) == (3, 0, 6, 1)
    assert index_range(np.array([[0]]), 1, (2, 1)) == (-1, 0, 1, 1)
    assert index_range(np.array([4, 2, 0]), 6, (3,)) is None  # decreasing
    assert index_range(np.array([[0, 1], [1, 0]]), 2, (2, 2)) is None  # varies on two axes


@pytest.mark.parametrize(
    "fn",
    [
        lambda m, x, y: torch.add(x, y, alpha=2.0) - torch.sub(y, x, alpha=0.5),
        lambda m, x, y: torch.rsub(x, 1.5) + torch.rsub(x, y, alpha=3.0),
        lambda m, x, y: torch.where((x >= y) | (x < -1.0), x / y, torch.relu(-y)),
        lambda m, x, y: ((x != y) & (x <= 0.5)).float() * torch.exp(x) + x.amax(-1, keepdim=True),
        lambda m, x, y: (
            torch.softmax(x, -1) + x.sum(dim=(0, 2), keepdim=True) + torch.reciprocal(y * y + 1)
        ),
        lambda m, x, y: torch.stack([x, y], dim=1).flatten(1, 2)[:, ::2].transpose(0, 1),
        lambda m, x, y: torch.cat(torch.chunk(x, 3, dim=-1)[::-1], dim=-1),  # 6, 6, 4 wide
    ],
)
def test_elementwise_and_shape_spellings(fn) -> None:
    y = torch.rand(2, 5, 16) + 0.5
    imported(Lambda(fn), X, y)
