"""Differential tests of `--mapping`: random transformer-like graphs on random archs with
macros to spare, and small BERT / GPT-2 models at batch 2, compiled with duplicated layers
and checked bit for bit against the integer golden; the copies really split the rows
(each copy's cores run MVMs) and `auto` keeps the faster of spread and duplicate."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cimc.api import import_model
from cimc.errors import CimcError
from cimc.inspect.mapping import program_mapping
from cimc.ir.graph import Graph
from cimc.machine.arch import Arch, arch_from_dict, load_arch
from cimc.machine.schedule import simulate
from cimc.pipeline import PipelineOptions, PipelineResult, compile_model
from cimc.verify import verify_compiled
from tests.differential.generator import example_input, random_arch_dict, random_spec
from tests.differential.runner import exporter_for, import_case


def roomy_arch(seed: int) -> Arch:
    """The seed's random arch with 16 macros a core and at least 2 cores: room for copies."""
    data = random_arch_dict(seed)
    data["core"]["macros"] = 16
    if data["chip"]["cores"] < 2:
        data["chip"].update(cores=2, mesh=[2, 1])
    return arch_from_dict(data, f"<roomy arch {seed}>")


def check_copies_run(result: PipelineResult) -> dict[str, int]:
    """The copies the program header names match the plan's, and every copy's cores
    issue MVMs (the rows are really split between them)."""
    stream = result.compiled.stream
    assert stream is not None
    mapping = program_mapping(result.compiled.program)
    assert mapping.copies == stream.copies and mapping.mapping == "duplicate"
    mvm_cores = {
        s.core for s in result.compiled.program.cores if any("mvm" in i.opcode for i in s.instrs)
    }
    for groups in mapping.core_groups.values():
        assert all(set(g) <= mvm_cores for g in groups)
    return stream.copies


@pytest.mark.parametrize("seed", range(8))
def test_duplicate_is_bit_exact_on_random_graphs(seed: int) -> None:
    spec = random_spec(seed)
    with tempfile.TemporaryDirectory() as tmp:
        graph = import_case(spec, exporter_for(seed, spec), Path(tmp))
    result = compile_model(graph, roomy_arch(seed), PipelineOptions(mapping="duplicate"))
    assert check_copies_run(result)
    report = verify_compiled(result.compiled, result.float_graph, {"x": example_input(spec)})
    assert report.bit_exact, report.divergence


def _zoo(family: str, batch: int, seq: int) -> tuple[Graph, dict[str, np.ndarray]]:
    from cimc.zoo import build_model, example_inputs

    module = build_model(family, "tiny")
    ids, mask = example_inputs(module, batch=batch, seq_len=seq)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = import_model(module, example_inputs=(ids, mask), canonicalize=False)
    return graph, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_duplicate_and_auto_are_bit_exact_on_zoo_models_at_batch_2(family: str) -> None:
    graph, feeds = _zoo(family, batch=2, seq=8)
    arch = load_arch("default")
    programs = {}
    for mapping in ("spread", "duplicate", "auto"):
        result = compile_model(graph.copy(), arch, PipelineOptions(mapping=mapping))
        report = verify_compiled(result.compiled, result.float_graph, feeds, with_figures=False)
        assert report.bit_exact, (mapping, report.divergence)
        programs[mapping] = result.compiled.program
        if mapping == "duplicate":
            assert min(check_copies_run(result).values()) >= 2
    cycles = {m: simulate(p, arch).makespan for m, p in programs.items()}
    assert cycles["auto"] == min(cycles["spread"], cycles["duplicate"])
    assert program_mapping(programs["spread"]).mapping == "spread"


def test_duplicate_refuses_streamed_weights_in_one_line() -> None:
    graph, _ = _zoo("bert", batch=1, seq=8)
    with pytest.raises(CimcError, match="mapping=duplicate needs every weight resident") as e:
        compile_model(graph, load_arch("tiny"), PipelineOptions(mapping="duplicate"))
    assert "\n" not in str(e.value)


def test_duplicate_refuses_a_single_row_and_auto_stays_spread() -> None:
    graph, _ = _zoo("bert", batch=1, seq=1)
    with pytest.raises(CimcError, match="found no layer to copy"):
        compile_model(graph.copy(), load_arch("default"), PipelineOptions(mapping="duplicate"))
    auto = compile_model(graph, load_arch("default"), PipelineOptions(mapping="auto"))
    assert program_mapping(auto.compiled.program).mapping == "spread"


def test_unknown_mapping_is_refused() -> None:
    graph, _ = _zoo("bert", batch=1, seq=4)
    with pytest.raises(CimcError, match="unknown mapping 'stacked'; use one of spread"):
        compile_model(graph, load_arch("default"), PipelineOptions(mapping="stacked"))


def test_duplicate_refuses_sparse_layers_and_auto_keeps_them_spread() -> None:
    from tests.differential.test_sparse_ffn import Ffn

    x = np.random.default_rng(0).standard_normal((1, 6, 32)).astype(np.float32)
    module = Ffn(32, 64, "relu", 0.5, seed=0).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = import_model(module, example_inputs=(torch.from_numpy(x),))
    arch = load_arch("default")
    options = PipelineOptions(mapping="duplicate", sparsity="exact")
    with pytest.raises(CimcError, match="which --sparsity exact loads by its active rows"):
        compile_model(graph.copy(), arch, options)
    auto = compile_model(graph, arch, PipelineOptions(sparsity="exact"))
    # the candidate copies the sparse down projection: auto drops it and stays spread
    assert program_mapping(auto.compiled.program).mapping == "spread"
    assert any(i.opcode == "mload.m" for s in auto.compiled.program.cores for i in s.instrs)
    report = verify_compiled(auto.compiled, auto.float_graph, {"x": x}, with_figures=False)
    assert report.bit_exact


def test_auto_keeps_spread_when_the_copies_cannot_be_lowered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A duplicated candidate that fails to lower (a copy's rows too wide for its
    scratchpad, say) is no candidate: auto compiles what spread compiles."""
    import cimc.backend.lower.table as table

    def refuse(*args: object, **kwargs: object) -> None:
        raise CimcError("scratchpad too small for one token of this matmul", "copy")

    graph, feeds = _zoo("bert", batch=2, seq=8)
    monkeypatch.setattr(table, "lower_linear_copies", refuse)
    with pytest.raises(CimcError, match="scratchpad too small"):
        compile_model(graph.copy(), load_arch("default"), PipelineOptions(mapping="duplicate"))
    auto = compile_model(graph, load_arch("default"), PipelineOptions(mapping="auto"))
    assert program_mapping(auto.compiled.program).mapping == "spread"
    report = verify_compiled(auto.compiled, auto.float_graph, feeds, with_figures=False)
    assert report.bit_exact
