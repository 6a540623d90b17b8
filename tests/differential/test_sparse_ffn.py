"""Differential tests of `--sparsity exact`: random ReLU / ReLU² / gated ReLU FFN blocks
with random sparsity levels, token counts and archs, compiled sparse and checked bit for
bit against the unchanged integer golden; each run loads exactly the weight rows of the
FFN neurons that are non-zero in some token (counted from the golden's own codes)."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from cimc.api import import_model
from cimc.backend.builder.compiled import program_inputs
from cimc.decode.active import active_fractions
from cimc.errors import CimcError
from cimc.machine.interpreter import run_program
from cimc.machine.opcodes import DYNAMIC
from cimc.pipeline import PipelineOptions, PipelineResult, compile_model
from cimc.quant.dialect import QLinear
from cimc.quant.golden import Golden
from cimc.verify import verify_compiled
from tests.differential.generator import random_arch

KINDS = ("relu", "relu2", "gated")


class Ffn(nn.Module):
    """x -> down(act(up(x) + shift)): the up bias shifted by a random amount so that a
    random share of the activations is zero."""

    def __init__(self, d: int, f: int, kind: str, zeros: float, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.kind = kind
        self.up = nn.Linear(d, f)
        self.gate = nn.Linear(d, f) if kind == "gated" else None
        self.down = nn.Linear(f, d)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            probe = torch.randn(256, d, generator=gen)
            first = self.gate if self.gate is not None else self.up
            pre = first(probe)
            first.bias -= torch.quantile(pre.flatten(), zeros)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.up(x)) if self.gate is None else self.up(x)
        if self.kind == "relu2":
            h = h * h
        if self.gate is not None:
            h = torch.relu(self.gate(x)) * h
        return self.down(h)


def _case(seed: int) -> tuple[Ffn, np.ndarray, str, float]:
    rng = random.Random(seed)
    kind, zeros = KINDS[seed % len(KINDS)], rng.choice((0.0, 0.5, 0.8, 0.9, 0.97, 1.0))
    d, f, tokens = rng.randint(8, 72), rng.randint(16, 300), rng.choice((1, 1, 2, 5))
    x = np.random.default_rng(seed).standard_normal((1, tokens, d)).astype(np.float32)
    return Ffn(d, f, kind, min(zeros, 0.999), seed).eval(), x, kind, zeros


@pytest.mark.parametrize("seed", range(12))
def test_sparse_ffn_is_bit_exact_and_loads_the_active_rows(seed: int) -> None:
    module, x, kind, zeros = _case(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = import_model(module, example_inputs=(torch.from_numpy(x),))
    arch = random_arch(seed)
    result = compile_model(graph, arch, PipelineOptions(sparsity="exact"))
    program = result.compiled.program
    assert any(i.opcode in DYNAMIC for s in program.cores for i in s.instrs), kind
    report = verify_compiled(result.compiled, result.float_graph, {"x": x})
    assert report.bit_exact, (seed, kind, zeros, report.divergence)
    # the run's active share of the down-projection is the golden's share of non-zero
    # FFN columns (over every token)
    down = next(
        n for n in result.graph.nodes() if isinstance(n.op, QLinear) and n.name in _sparse(result)
    )
    golden = Golden(result.graph).run({"x": x}, keep_all=True)
    codes = golden.values[down.inputs[0]].reshape(-1, down.op.plan.weight.shape[0])
    want = float(np.mean((codes != 0).any(axis=0)))
    feeds = program_inputs(result.compiled, {"x": x})
    run = run_program(program, arch, feeds, result.compiled.consts)
    got = active_fractions(result.compiled, program, run.dynamic)
    assert got == {down.name: pytest.approx(want)}


def _sparse(result: PipelineResult) -> set[str]:
    return {
        result.compiled.comments.get(i.comment or "", "")
        for s in result.compiled.program.cores
        for i in s.instrs
        if i.opcode == "mload.m"
    }


def test_exact_refuses_gelu_and_silu_ffns() -> None:
    class Gelu(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.up, self.down = nn.Linear(16, 64), nn.Linear(64, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.down(nn.functional.gelu(self.up(x)))

    x = torch.randn(1, 2, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = import_model(Gelu().eval(), example_inputs=(x,))
    with pytest.raises(CimcError, match="SiLU and GELU are not exactly sparse"):
        compile_model(graph, random_arch(0), PipelineOptions(sparsity="exact"))
