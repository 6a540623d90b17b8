"""Differential tests of `--mapping pipeline`: random transformer-like graphs at batch 2..4
on random archs with room, and BERT / GPT-2 / LLaMA tiny at batch 2 and 4 on `default` and
`large`, compiled as pipelines of 2..4 stages and checked bit for bit against the integer
golden. The program header names the stages; each stage's cores run only their own nodes'
work (and its MVMs), `auto` is never slower than spread, impossible pipelines are refused
in one line, and compiling twice gives the same program."""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cimc.api import import_model
from cimc.backend.plan.pipeline import emits_code
from cimc.backend.plan.target import Target
from cimc.errors import CimcError
from cimc.inspect.mapping import program_mapping
from cimc.machine.arch import Arch, arch_from_dict, load_arch
from cimc.machine.printer import print_program
from cimc.machine.program import View
from cimc.machine.schedule import simulate
from cimc.pipeline import PipelineOptions, PipelineResult, compile_model
from cimc.verify import verify_compiled
from tests.differential.generator import example_input, random_arch_dict, random_spec
from tests.differential.runner import exporter_for, import_case
from tests.differential.zoo_graphs import zoo_feeds, zoo_graph

SYNC = ("send", "mcast", "recv")  # ordering tokens a producer's core sends a consumer's
MACRO_OPS = ("q.linear", "q.matmul", "q.attention")


def pipeline_arch(seed: int, stages: int) -> Arch:
    """The seed's random arch with room for every weight of a stage on its cores: 32
    macros a core, at least `stages` cores, a scratchpad of 256 KiB."""
    data = random_arch_dict(seed)
    data["core"].update(macros=32, scratchpad_bytes=256 * 1024)
    if data["chip"]["cores"] < stages:
        data["chip"].update(cores=stages, mesh=[stages, 1])
    return arch_from_dict(data, f"<pipeline arch {seed}>")


def _token(instr_operands: tuple[object, ...]) -> bool:
    views = [v for v in instr_operands if isinstance(v, View)]
    return len(views) == 1 and (views[0].rows, views[0].cols) == (1, 1)


def check_stages(result: PipelineResult, stages: int, micro_batches: int) -> None:
    """The header names `stages` stages on disjoint, contiguous snake-order core groups
    that cover the chip, each a contiguous run of the code-emitting nodes; every
    instruction of a node runs on its stage's cores (ordering tokens excepted), and
    every stage holding a macro op issues MVMs on its own cores."""
    compiled = result.compiled
    mapping = program_mapping(compiled.program)
    assert mapping.mapping == "pipeline" and mapping.micro_batches == micro_batches
    assert len(mapping.stages) == stages
    order = Target.from_arch(compiled.arch).snake_order()
    assert [c for s in mapping.stages for c in s.cores] == list(order)
    sizes = [len(s.cores) for s in mapping.stages]
    assert max(sizes) - min(sizes) <= 1
    nodes = [n for n in result.graph.nodes() if emits_code(n)]
    names = [n.name for n in nodes]
    stage_of: dict[str, int] = {}
    start = 0
    for k, s in enumerate(mapping.stages):
        assert names.index(s.first) == start, (k, s.first)
        end = names.index(s.last) + 1
        assert end > start
        stage_of.update(dict.fromkeys(names[start:end], k))
        start = end
    assert start == len(names)  # the stages cover every node that emits code
    core_stage = {c: k for k, s in enumerate(mapping.stages) for c in s.cores}
    mvm_stages = set()
    for stream in compiled.program.cores:
        for instr in stream.instrs:
            if instr.opcode in ("halt", "barrier"):  # no node: the end, all-core sync
                continue
            node = compiled.comments[instr.comment or ""]
            own = stage_of.get(node, core_stage[stream.core])  # declared values: no stage
            if own != core_stage[stream.core]:
                assert instr.opcode in SYNC and _token(instr.operands), (stream.core, instr)
            if instr.opcode.startswith("mvm"):
                mvm_stages.add(own)
    with_macros = {stage_of[n.name] for n in nodes if n.op.NAME in MACRO_OPS}
    assert with_macros == mvm_stages


def _verify(result: PipelineResult, feeds: dict[str, np.ndarray]) -> None:
    report = verify_compiled(result.compiled, result.float_graph, feeds, with_figures=False)
    assert report.bit_exact, report.divergence


@pytest.mark.parametrize("seed", range(6))
def test_pipeline_is_bit_exact_on_random_graphs(seed: int) -> None:
    stages, batch = 2 + seed % 3, 2 + (seed // 3) % 3
    spec = replace(random_spec(seed), batch=batch)
    with tempfile.TemporaryDirectory() as tmp:
        graph = import_case(spec, exporter_for(seed, spec), Path(tmp))
    options = PipelineOptions(mapping="pipeline", stages=stages)
    result = compile_model(graph, pipeline_arch(seed, stages), options)
    check_stages(result, stages, batch)
    _verify(result, {"x": example_input(spec)})


def test_early_cuts_leave_the_later_stages_room() -> None:
    """Seed 68 on 6 cores in 4 stages (groups of 2, 2, 1, 1 cores, 30 free macros a core):
    cut by work alone, the last stage got weights for 35 macros and the pipeline was
    refused, though cuts exist that fit every stage."""
    seed, stages = 68, 4
    spec = replace(random_spec(seed), batch=3)
    with tempfile.TemporaryDirectory() as tmp:
        graph = import_case(spec, exporter_for(seed, spec), Path(tmp))
    options = PipelineOptions(mapping="pipeline", stages=stages)
    result = compile_model(graph, pipeline_arch(seed, stages), options)
    check_stages(result, stages, 3)
    _verify(result, {"x": example_input(spec)})


# family, arch, batch, stages, sequence: every family at batches 2 and 4 on both archs. On
# `large` (96 macros a core) 32 tokens make attention write K^T and V into the macros
# (below that the vector unit is cheaper), which stay there across query chunks and heads:
# a later micro-batch of the same node on the same core must not reuse them
ZOO = [
    (family, arch, batch, stages, seq)
    for family in ("bert", "gpt2", "llama")
    for arch, batch, stages, seq in (
        ("default", 2, 2, 8),
        ("default", 4, 4, 8),
        ("large", 2, 2, 32),
        ("large", 4, 3, 32),
    )
]


@pytest.mark.parametrize(("family", "arch", "batch", "stages", "seq"), ZOO)
def test_pipeline_is_bit_exact_on_zoo_models(
    family: str, arch: str, batch: int, stages: int, seq: int
) -> None:
    options = PipelineOptions(mapping="pipeline", stages=stages)
    result = compile_model(zoo_graph(family, batch, seq), load_arch(arch), options)
    check_stages(result, stages, batch)
    if arch == "large":  # attention's K^T tiles in the macros (see ZOO)
        program = result.compiled.program
        assert any(i.opcode == "mload.t" for s in program.cores for i in s.instrs)
    _verify(result, zoo_feeds(batch, seq, seed=batch))


def test_micro_batches_of_two_elements() -> None:
    """map{micro_batches=2} at batch 4: two micro-batches of 2, bit exact."""
    backend = "tile,map{mapping=pipeline,stages=2,micro_batches=2},plan-values,plan-memory,"
    backend += "plan-sparsity,lower,stage-consts,hoist-const-loads,merge-sends"
    options = PipelineOptions(pipeline=f"idioms,check-canonical,quantize,{backend}")
    result = compile_model(zoo_graph("gpt2", 4, 8), load_arch("default"), options)
    check_stages(result, 2, 2)
    assert "mapping pipeline: 2 stages, 2 micro-batches of 2 (batch 4)" in print_program(
        result.compiled.program
    )
    _verify(result, zoo_feeds(4, 8, seed=5))


def test_auto_is_never_slower_than_spread() -> None:
    arch = load_arch("default")
    graph = zoo_graph("gpt2", 4, 8)
    programs = {}
    for mapping in ("spread", "auto"):
        result = compile_model(graph.copy(), arch, PipelineOptions(mapping=mapping))
        _verify(result, zoo_feeds(4, 8))
        programs[mapping] = result.compiled.program
    cycles = {m: simulate(p, arch).makespan for m, p in programs.items()}
    assert cycles["auto"] <= cycles["spread"]
    kept = program_mapping(programs["auto"]).mapping
    assert kept in ("spread", "duplicate", "pipeline")
    if kept != "spread":  # a candidate replaces spread only when strictly faster
        assert cycles["auto"] < cycles["spread"]


def test_compiling_twice_gives_the_same_program() -> None:
    graph = zoo_graph("llama", 2, 8)
    options = PipelineOptions(mapping="pipeline", stages=3)
    a, b = (compile_model(graph.copy(), load_arch("default"), options) for _ in range(2))
    assert print_program(a.compiled.program) == print_program(b.compiled.program)
    assert a.compiled.consts.keys() == b.compiled.consts.keys()
    assert all(
        np.array_equal(a.compiled.consts[k], b.compiled.consts[k]) for k in a.compiled.consts
    )


# ---- refusals: one line each --------------------------------------------------------------


def _refused(graph: object, arch: str, options: PipelineOptions, where: str, match: str) -> None:
    """compile_model refuses in one line, located at `where`, the pass that failed named."""
    with pytest.raises(CimcError, match=match) as e:
        compile_model(graph, load_arch(arch), options)
    assert "\n" not in str(e.value) and e.value.location == where
    assert e.value.message.startswith("pass ")


def test_batch_1_is_refused_and_auto_stays_off_the_pipeline() -> None:
    graph = zoo_graph("bert", 1, 8)
    options = PipelineOptions(mapping="pipeline", stages=2)
    _refused(graph.copy(), "default", options, "pipeline", "map failed: batch 1: nothing to")
    auto = compile_model(graph, load_arch("default"), PipelineOptions())
    assert program_mapping(auto.compiled.program).mapping != "pipeline"


def test_streamed_weights_are_refused() -> None:
    options = PipelineOptions(mapping="pipeline", stages=2)
    _refused(zoo_graph("bert", 2, 8), "tiny", options, "map", "needs every weight resident")


def test_more_stages_than_cores_are_refused() -> None:
    options = PipelineOptions(mapping="pipeline", stages=5)
    match = "5 stages: a pipeline needs 2 to 4 stages here \\(cores 4"
    _refused(zoo_graph("bert", 2, 8), "default", options, "pipeline", match)


def test_exact_sparsity_is_refused_with_a_pipeline() -> None:
    from tests.differential.test_sparse_ffn import Ffn

    x = np.random.default_rng(0).standard_normal((2, 6, 32)).astype(np.float32)
    module = Ffn(32, 64, "relu", 0.5, seed=0).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = import_model(module, example_inputs=(torch.from_numpy(x),))
    options = PipelineOptions(mapping="pipeline", stages=2, sparsity="exact")
    match = "mapping=pipeline keeps every weight resident, but --sparsity exact loads rows"
    _refused(graph.copy(), "default", options, "plan-sparsity", match)
    auto = compile_model(graph, load_arch("default"), PipelineOptions(sparsity="exact"))
    assert program_mapping(auto.compiled.program).mapping == "spread"  # the sparse layers
    _verify(auto, {"x": x})


def test_a_mask_shared_by_the_batch_lowers_spread() -> None:
    """An [S, S] padding mask (a constant, the same for every sequence) at batch 2: spread
    lowers it for each of the 2 sequences, as the pipeline's micro-batches of 1 do."""
    spec = replace(random_spec(0), batch=2)
    assert spec.mask == "padding" and spec.sdpa
    with tempfile.TemporaryDirectory() as tmp:
        graph = import_case(spec, "torch.export", Path(tmp))
    for mapping in ("spread", "pipeline"):
        result = compile_model(graph.copy(), load_arch("default"), PipelineOptions(mapping=mapping))
        _verify(result, {"x": example_input(spec)})
