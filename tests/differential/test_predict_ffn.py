"""Differential tests of `--sparsity predict`: random ReLU / ReLU² / gated ReLU / gated SiLU
FFN blocks with random sparsity levels, token counts and archs, compiled with low-rank
predictors and checked bit for bit against the integer golden (which applies the same
predictors); each run loads exactly the up-projection columns of the neurons some token's
mask names (counted from the golden's own mask codes)."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from cimc.api import import_model
from cimc.backend.builder.compiled import graph_outputs, program_inputs
from cimc.decode.active import predicted_fractions
from cimc.errors import CimcError
from cimc.machine.interpreter import run_program
from cimc.pipeline import PipelineOptions, compile_model
from cimc.quant.dialect import QLinear, QMaskedLinear
from cimc.quant.golden import Golden
from cimc.quant.predictor import recall_counts
from cimc.verify import verify_compiled
from tests.differential.generator import random_arch
from tests.differential.test_sparse_ffn import Ffn
from tests.differential.test_window_ffn import _with_dram

KINDS = ("relu", "relu2", "gated", "silu")


class SiluFfn(nn.Module):
    """LLaMA's FFN: down(silu(gate(x)) * up(x)); SiLU is not exactly sparse."""

    def __init__(self, d: int, f: int, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.gate, self.up, self.down = nn.Linear(d, f), nn.Linear(d, f), nn.Linear(f, d)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            self.gate.bias -= 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(nn.functional.silu(self.gate(x)) * self.up(x))


def _case(seed: int) -> tuple[nn.Module, np.ndarray, str]:
    rng = random.Random(seed)
    kind, zeros = KINDS[seed % len(KINDS)], rng.choice((0.0, 0.5, 0.8, 0.9, 0.97))
    d, f, tokens = rng.randint(8, 72), rng.randint(16, 300), rng.choice((1, 1, 2, 5))
    x = np.random.default_rng(seed).standard_normal((1, tokens, d)).astype(np.float32)
    module = SiluFfn(d, f, seed) if kind == "silu" else Ffn(d, f, kind, zeros, seed)
    return module.eval(), x, kind


@pytest.mark.parametrize("seed", range(12))
def test_predicted_ffn_is_bit_exact_and_loads_the_predicted_columns(seed: int) -> None:
    module, x, kind = _case(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = import_model(module, example_inputs=(torch.from_numpy(x),))
    arch = random_arch(seed)
    result = compile_model(graph, arch, PipelineOptions(sparsity="predict"))
    masked = [n for n in result.graph.nodes() if isinstance(n.op, QMaskedLinear)]
    assert len(masked) == (2 if kind in ("gated", "silu") else 1), kind
    report = verify_compiled(result.compiled, result.float_graph, {"x": x})
    assert report.bit_exact, (seed, kind, report.divergence)
    program = result.compiled.program
    feeds = program_inputs(result.compiled, {"x": x})
    run = run_program(program, arch, feeds, result.compiled.consts)
    got = predicted_fractions(result.compiled, program, run.dynamic)
    golden = Golden(result.graph).run({"x": x}, keep_all=True).values
    for node in masked:
        if node.name not in got:  # lowered dense and masked (tiles in flash)
            comments = result.compiled.comments
            assert not any(
                i.opcode == "mload.t.m" and comments.get(i.comment or "") == node.name
                for s in program.cores
                for i in s.instrs
            )
            continue
        mask = golden[node.inputs[1]].reshape(-1, node.type.shape[-1])
        assert got[node.name] == pytest.approx(float(np.mean((mask != 0).any(axis=0))))


def test_predictor_recall_is_counted_against_the_unmasked_activation() -> None:
    module, x, _ = _case(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = import_model(module, example_inputs=(torch.from_numpy(x),))
    result = compile_model(graph, random_arch(0), PipelineOptions(sparsity="predict"))
    values = Golden(result.graph).run({"x": x}, keep_all=True).values
    counts = recall_counts(result.graph, values, lambda name, v: v)
    (name,) = counts
    hits, active = counts[name]
    # the activation of the masked output is non-zero exactly where a truly active neuron
    # was predicted (f(0) = 0): the golden's own activation codes count the hits
    (act,) = (u for u in result.graph.users(name) if u != name)
    assert hits == int(np.count_nonzero(values[act]))
    assert 0 < hits <= active


def test_predict_needs_an_ffn() -> None:
    class Lone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(16, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = import_model(Lone().eval(), example_inputs=(torch.randn(1, 2, 16),))
    with pytest.raises(CimcError, match="--sparsity predict needs a feed-forward block"):
        compile_model(graph, random_arch(0), PipelineOptions(sparsity="predict"))


@pytest.mark.parametrize("seed", range(4))
def test_windowed_predicted_ffn_in_flash_copies_only_newly_predicted_neurons(seed: int) -> None:
    """Weights in flash, --window K: runs in a row with the state carried, each bit-exact
    against the golden of its own input; a masked layer's fill copies the neurons its mask
    names now and named in none of the last K runs (the golden's mask codes)."""
    module, x, kind = _case(seed)
    window = 1 + seed % 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = import_model(module, example_inputs=(torch.from_numpy(x),))
    arch = random_arch(seed)
    probe = compile_model(graph, arch, PipelineOptions(sparsity="predict"))
    memory = probe.compiled.memory
    assert memory is not None
    predictors = {n.name for n in probe.graph.nodes() if n.name.endswith((".predict", ".score"))}
    caches = sum(  # the masked layers' and the down-projection's, not the predictors'
        n.op.plan.weight.size + max(n.op.plan.weight.shape) + 128
        for n in probe.graph.nodes()
        if isinstance(n.op, QLinear) and n.name not in predictors
    )
    small = _with_dram(arch, memory.dram_other_bytes + caches + 64)
    options = PipelineOptions(sparsity="predict", window=window)
    result = compile_model(graph, small, options)
    compiled, program = result.compiled, result.compiled.program
    masked = {n.name: n for n in result.graph.nodes() if isinstance(n.op, QMaskedLinear)}
    fills = {
        compiled.comments.get(i.comment or ""): (s.core, pc)
        for s in program.cores
        for pc, i in enumerate(s.instrs)
        if i.opcode == "dma.m"
    }
    for name in masked.keys() - fills.keys():  # no room for a fill: straight from flash
        tables = {
            i.operands[1].symbol
            for st in program.cores
            for i in st.instrs
            if i.opcode == "gather.m" and compiled.comments.get(i.comment or "") == name
        }
        assert tables == {f"{name}.rows"}, (seed, kind, tables)
    assert seed != 0 or masked.keys() <= fills.keys()  # seed 0 caches its up-projection
    golden = Golden(result.graph)
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {}
    history: dict[str, list[set[int]]] = {name: [] for name in masked}
    for r in range(5):
        xr = (x + 0.5 * rng.standard_normal(x.shape)).astype(np.float32)
        want = golden.run({"x": xr}, keep_all=True)
        feeds = program_inputs(compiled, {"x": xr})
        run = run_program(program, compiled.arch, feeds, compiled.consts, state=state)
        state = run.state
        got = graph_outputs(compiled, run.outputs)
        for name, codes in want.outputs.items():
            np.testing.assert_array_equal(got[name], codes, err_msg=f"seed {seed} run {r}")
        for name, node in masked.items():
            mask = want.values[node.inputs[1]].reshape(-1, node.type.shape[-1])
            wanted = set(np.flatnonzero((mask != 0).any(axis=0)).tolist())
            if name in fills:
                copied = run.dynamic[fills[name]]
                recent = set().union(*history[name][max(0, r - window) :])
                assert set(copied[copied >= 0].tolist()) == wanted - recent, (seed, kind, r)
            history[name].append(wanted)


def test_many_tokens_run_in_row_chunks_bit_exact() -> None:
    """64 tokens of a 64 -> 256 FFN do not fit tiny's 16 KiB scratchpads at once: the
    masked layer runs in row chunks, each with its own wanted columns."""
    from cimc.machine.arch import load_arch

    x = np.random.default_rng(3).standard_normal((1, 64, 64)).astype(np.float32)
    module = Ffn(64, 256, "relu", 0.9, 3).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = import_model(module, example_inputs=(torch.from_numpy(x),))
    result = compile_model(graph, load_arch("tiny"), PipelineOptions(sparsity="predict"))
    program = result.compiled.program
    (masked,) = (n.name for n in result.graph.nodes() if isinstance(n.op, QMaskedLinear))
    index_loads = [
        i
        for s in program.cores
        for i in s.instrs
        if i.opcode == "dma" and i.operands[1].symbol == f"{masked}.neurons"
    ]
    assert len(index_loads) > len(program.cores)  # more than one chunk per core
    report = verify_compiled(result.compiled, result.float_graph, {"x": x})
    assert report.bit_exact, report.divergence
