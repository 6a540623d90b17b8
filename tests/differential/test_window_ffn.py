"""Differential tests of `--window K`: random ReLU / ReLU² / gated ReLU FFN blocks whose
weights the memory plan puts in flash, run several times in a row with the program's
state carried (the DRAM cache of neuron rows and their ages), each run bit-exact against
the integer golden of its own input; each run copies from flash exactly the rows of the
neurons that are active now and were not active in the last K runs (from the golden's
codes)."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from cimc.api import import_model
from cimc.backend.builder.compiled import graph_outputs, program_inputs
from cimc.errors import CimcError
from cimc.machine.arch import Arch
from cimc.machine.interpreter import run_program
from cimc.pipeline import PipelineOptions, PipelineResult, compile_model
from cimc.quant.dialect import QLinear
from cimc.quant.golden import Golden
from tests.differential.generator import random_arch
from tests.differential.test_sparse_ffn import _case, _sparse

RUNS = 6


def _with_dram(arch: Arch, dram: int) -> Arch:
    dram = -(-dram // 64) * 64
    return replace(arch, memory=replace(arch.memory, dram_bytes=dram))


def _windowed(graph: object, arch: Arch, window: int) -> PipelineResult:
    """Compiled with a DRAM that holds the activations and the window caches but not the
    weights: the FFN's weights go to flash."""
    probe = compile_model(graph, arch, PipelineOptions(sparsity="exact"))
    memory = probe.compiled.memory
    assert memory is not None
    sparse = _sparse(probe)
    caches = sum(
        n.op.plan.weight.shape[0] * (n.op.plan.weight.shape[1] + 1) + 128
        for n in probe.graph.nodes()
        if isinstance(n.op, QLinear) and n.name in sparse
    )
    small = _with_dram(arch, memory.dram_other_bytes + caches + 64)
    return compile_model(graph, small, PipelineOptions(sparsity="exact", window=window))


@pytest.mark.parametrize("seed", range(6))
def test_windowed_ffn_is_bit_exact_and_copies_only_new_neurons(seed: int) -> None:
    module, x, kind, zeros = _case(seed)
    window = seed % 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = import_model(module, example_inputs=(torch.from_numpy(x),))
    result = _windowed(graph, random_arch(seed), window)
    compiled, program = result.compiled, result.compiled.program
    fills = [
        (s.core, pc) for s in program.cores for pc, i in enumerate(s.instrs) if i.opcode == "dma.m"
    ]
    assert len(fills) == 1, (seed, kind)  # the down-projection, from flash
    golden = Golden(result.graph)
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {}
    history: list[set[int]] = []
    for r in range(RUNS):
        xr = (x + 0.5 * rng.standard_normal(x.shape)).astype(np.float32)
        want = golden.run({"x": xr}, keep_all=True)
        run = run_program(
            program, compiled.arch, program_inputs(compiled, {"x": xr}), compiled.consts,
            state=state,
        )  # fmt: skip
        state = run.state
        got = graph_outputs(compiled, run.outputs)
        for name, codes in want.outputs.items():
            np.testing.assert_array_equal(got[name], codes, err_msg=f"seed {seed} run {r}")
        active = _active(result, want.values)
        copied = run.dynamic[fills[0]]
        recent = set().union(*history[max(0, len(history) - window) :])
        assert set(copied[copied >= 0].tolist()) == active - recent, (seed, r)
        history.append(active)


def _active(result: PipelineResult, values: dict[str, np.ndarray]) -> set[int]:
    """The neurons of the windowed layer non-zero in some token of the run."""
    (name,) = _sparse(result)
    node = result.graph.node(name)
    assert isinstance(node.op, QLinear)
    k = node.op.plan.weight.shape[0]
    codes = values[node.inputs[0]].reshape(-1, k)
    return set(np.flatnonzero((codes != 0).any(axis=0)).tolist())


def test_window_needs_exact_sparsity() -> None:
    module, x, _, _ = _case(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = import_model(module, example_inputs=(torch.from_numpy(x),))
    with pytest.raises(CimcError, match="needs --sparsity exact"):
        compile_model(graph, random_arch(0), PipelineOptions(window=2))
    with pytest.raises(CimcError, match="outside 0..100"):
        compile_model(graph, random_arch(0), PipelineOptions(sparsity="exact", window=200))
