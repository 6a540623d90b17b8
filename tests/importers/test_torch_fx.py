"""fx.GraphModules (torch.fx.symbolic_trace, ExportedProgram.module()) and importer errors."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cimc.api import import_model
from cimc.errors import CimcError
from cimc.importers.torch_export import import_torch
from cimc.ir.ops import Attention
from cimc.reference.float_model import FloatModel


class Block(nn.Module):
    """A pre-norm GPT block written by hand (nanoGPT style: masked_fill causal mask)."""

    def __init__(self, dim: int = 32, heads: int = 4, seq: int = 8) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.register_buffer("tril", torch.tril(torch.ones(seq, seq)).view(1, 1, seq, seq))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (t.view(b, s, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d // self.heads))
        att = att.masked_fill(self.tril == 0, float("-inf"))
        y = F.softmax(att, dim=-1) @ v
        x = x + self.proj(y.transpose(1, 2).contiguous().view(b, s, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


def block_and_input() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    block = Block().eval()
    with torch.no_grad():  # non-trivial LayerNorm parameters
        for ln in (block.ln1, block.ln2):
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.uniform_(-0.5, 0.5)
    return block, torch.randn(1, 8, 32)


def test_symbolic_trace_of_a_block() -> None:
    block, x = block_and_input()
    traced = torch.fx.symbolic_trace(block)
    graph = import_model(traced, (x,))
    census = Counter(n.op.NAME for n in graph.nodes())
    assert census["attention"] == 1 and census["softmax"] == 0 and census["matmul"] == 0
    assert census["layer_norm"] == 2 and census["gelu"] == 1 and census["linear"] == 4
    (att,) = [n for n in graph.nodes() if isinstance(n.op, Attention)]
    assert att.op.causal and len(att.inputs) == 3  # the tril buffer became causal=True
    assert att.op.scale == pytest.approx(1 / math.sqrt(8))
    got = FloatModel(graph).run({"x": x.numpy()})["output"]
    with torch.no_grad():
        want = block(x).numpy()
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-4


def test_unlifted_graph_module_from_an_exported_program() -> None:
    block, x = block_and_input()
    module = torch.export.export(block, (x,)).module()
    assert isinstance(module, torch.fx.GraphModule)
    graph = import_model(module, (x,))
    got = FloatModel(graph).run({"x": x.numpy()})["output"]
    with torch.no_grad():
        np.testing.assert_allclose(got, block(x).numpy(), rtol=1e-4, atol=1e-5)


class Cumulative(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumprod(x, dim=-1) + torch.cummax(x, dim=-1).values


def test_unsupported_ops_are_listed_in_one_error() -> None:
    with pytest.raises(CimcError) as info:
        import_torch(Cumulative(), (torch.randn(2, 3),))
    message = info.value.message
    assert "aten.cumprod.default (fx node cumprod)" in message
    assert "aten.cummax.default (fx node cummax)" in message
    assert "The canonical ops are: abs, add, attention," in message
    # located at the first offending node, with the source line of the model
    assert info.value.location.startswith("cumprod @ test_torch_fx.py:")


def test_constant_subgraphs_of_unsupported_ops_are_folded() -> None:
    class Table(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * torch.cumsum(torch.ones(x.shape[-1]), dim=0)  # shape-only: folded

    x = torch.randn(2, 3)
    graph = import_model(Table(), (x,))
    assert [n.op.NAME for n in graph.nodes()] == ["input", "constant", "mul"]
    np.testing.assert_allclose(
        FloatModel(graph).run({"x": x.numpy()})["output"], x * torch.arange(1, 4)
    )


def test_module_needs_example_inputs() -> None:
    with pytest.raises(CimcError, match="needs example_inputs") as info:
        import_torch(Block())
    assert info.value.location == "<Block>"


def test_export_failure_is_one_line() -> None:
    with pytest.raises(CimcError, match="torch.export.export failed") as info:
        import_torch(Block(), (torch.randn(1, 8, 5),))  # wrong feature size
    assert "\n" not in str(info.value)


def test_unsupported_source_type() -> None:
    with pytest.raises(CimcError, match="cannot import a int"):
        import_torch(3)  # type: ignore[arg-type]


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.register_buffer("table", torch.arange(6.0).reshape(2, 3))

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, token_type_ids=None):
        h = self.emb(input_ids) + self.emb(position_ids)
        return h, h[:, -1], self.table * 2  # the last output is a constant


def test_multiple_outputs_and_input_meanings() -> None:
    model = TwoHeads().eval()
    ids, pos = torch.tensor([[1, 2, 3]]), torch.tensor([[0, 1, 2]])
    graph = import_model(model, (ids, pos))
    meanings = {n.name: n.op.meaning for n in graph.input_nodes()}
    assert meanings == {"input_ids": "token_ids", "position_ids": "position_ids"}
    assert [out for out, _ in graph.outputs] == ["output_0", "output_1", "output_2"]
    got = FloatModel(graph).run({"input_ids": ids.numpy(), "position_ids": pos.numpy()})
    with torch.no_grad():
        want = model(ids, pos)
    for k, w in enumerate(want):
        np.testing.assert_allclose(got[f"output_{k}"], w.numpy(), rtol=1e-6)
    last = graph.node(graph.outputs[1][1])
    assert last.op.NAME == "gather" and last.op.axis == 1 and last.op.index == 2


class MixedPrecision(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = self.fc(x)
        return y.float() + x


def test_autocast_regions_are_refused() -> None:
    with pytest.raises(CimcError, match="autocast .* not supported: export in float32"):
        import_torch(MixedPrecision(), (torch.randn(2, 4),))


def test_unsupported_input_dtype() -> None:
    with pytest.raises(CimcError, match="dtype torch.complex64 are not supported") as info:
        import_torch(MixedPrecision().fc, (torch.randn(2, 4, dtype=torch.complex64),))
    assert info.value.location == "input"
