"""The backend's stages as passes (cimc/backend/stages/): levels, options, the plan IR's
text and verifier, and that running them one by one gives compile_graph's program, which
computes what the integer golden computes."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest

from cimc.backend.builder.compiled import Compiled, graph_outputs, program_inputs
from cimc.backend.stages.backend import compile_graph
from cimc.backend.stages.planned import PlannedGraph
from cimc.backend.stages.program import ProgramPass
from cimc.errors import CimcError
from cimc.ir.graph import Graph
from cimc.machine.interpreter import run_program
from cimc.machine.printer import print_program
from cimc.machine.program import Program
from cimc.passes.manager import PassManager, describe_passes, parse_pipeline, verify_deep
from cimc.pipeline import PipelineOptions, compile_model
from cimc.quant.golden import Golden
from cimc.reference.float_model import default_inputs
from tests.e2e.e2e_helpers import arch, float_input, import_module, mlp

STAGES = (
    "tile{arch=tiny},map,plan-values,plan-memory,lower,stage-consts,hoist-const-loads,merge-sends"
)


@pytest.fixture(scope="module")
def qgraph() -> Graph:
    graph = import_module(mlp((40, 64, 16)), float_input((1, 4, 40)))
    return compile_model(graph, arch("tiny")).graph


def run(passes: str, graph: Graph) -> object:
    return PassManager(parse_pipeline(passes)).run(graph)


def test_stages_from_pipeline_text_give_compile_graphs_program(qgraph: Graph) -> None:
    staged = run(STAGES, qgraph)
    assert isinstance(staged, Compiled)
    direct = compile_graph(qgraph, arch("tiny"))
    assert print_program(staged.program) == print_program(direct.program)
    inputs = default_inputs(qgraph, seed=2)
    out = run_program(staged.program, staged.arch, program_inputs(staged, inputs), staged.consts)
    want = Golden(qgraph).run(inputs).outputs
    for name, got in graph_outputs(staged, out.outputs).items():
        np.testing.assert_array_equal(got, want[name])


def test_plan_level_prints_tiles_windows_and_values(qgraph: Graph) -> None:
    plan = run("tile{arch=tiny},map,plan-values", qgraph)
    assert isinstance(plan, PlannedGraph) and plan.stream is not None
    text = str(plan)
    linears = [n.name for n in qgraph.nodes() if n.op.NAME == "q.linear"]
    assert all(f"tile %{name} [" in text for name in linears)
    windows = [line for line in text.splitlines() if line.startswith("  c")]
    assert len(windows) == sum(len(p.placement.tiles) for p in plan.stream.phases)
    assert all(f"value %{n.name}: " in text for n in qgraph.nodes())


def test_map_policy_option_changes_the_plan(qgraph: Graph) -> None:
    sequential = run("tile{arch=tiny},map{policy=sequential}", qgraph)
    assert isinstance(sequential, PlannedGraph) and sequential.stream is not None
    assert sequential.stream.policy == "sequential"
    with pytest.raises(CimcError, match="unknown streaming policy 'fastest'"):
        run("tile{arch=tiny},map{policy=fastest}", qgraph)


def test_stage_errors_name_what_is_missing(qgraph: Graph) -> None:
    with pytest.raises(CimcError, match=r"tile needs an architecture: tile\{arch="):
        run("tile", qgraph)
    with pytest.raises(CimcError, match="lower needs the map, plan-values and plan-memory"):
        run("tile{arch=tiny},plan-values,lower", qgraph)
    with pytest.raises(CimcError, match="lower needs the map, plan-values and plan-memory"):
        run("tile{arch=tiny},map,plan-values,lower", qgraph)
    with pytest.raises(CimcError, match="plan-memory needs the map and plan-values passes"):
        run("tile{arch=tiny},map,plan-memory", qgraph)
    with pytest.raises(CimcError, match="pass map runs on a plan, but after dce the IR is a graph"):
        run("dce,map", qgraph)
    with pytest.raises(CimcError, match="runs on a plan .after tile., not on Graph"):
        PassManager(parse_pipeline("map")).run(qgraph)


def test_plan_verifier_refuses_plans_of_another_graph(qgraph: Graph) -> None:
    plan = run("tile{arch=tiny},map,plan-values", qgraph)
    assert isinstance(plan, PlannedGraph) and plan.values is not None
    plan.verify()
    deeper = import_module(mlp((40, 64, 32, 16)), float_input((1, 4, 40)))
    other = run("tile{arch=tiny},map", compile_model(deeper, arch("tiny")).graph)
    assert isinstance(other, PlannedGraph)
    with pytest.raises(CimcError, match="the streaming plan and the graph disagree on %"):
        replace(plan, stream=other.stream).verify()
    with pytest.raises(CimcError, match="has no storage"):
        replace(plan, values=replace(plan.values, slots={})).verify()
    with pytest.raises(CimcError, match="the tiling has no tiles for layer"):
        replace(plan, tiling=replace(plan.tiling, layers=())).verify()


def test_program_passes_refuse_a_graph_and_list_their_levels(qgraph: Graph) -> None:
    with pytest.raises(CimcError, match="runs on a program .after lower., not on Graph"):
        PassManager(parse_pipeline("merge-sends")).run(qgraph)
    listing = describe_passes()
    for name, levels in [
        ("tile", "graph -> plan"),
        ("map", "plan -> plan"),
        ("lower", "plan -> program"),
        ("merge-sends", "program -> program"),
        ("backend", "graph -> program"),
    ]:
        line = next(line for line in listing.splitlines() if line.split("{")[0].split()[0] == name)
        assert levels in line


def test_pipeline_streaming_option_reaches_the_map_pass(qgraph: Graph) -> None:
    graph = import_module(mlp((40, 64, 16)), float_input((1, 4, 40)))
    result = compile_model(graph, arch("tiny"), PipelineOptions(streaming="sequential"))
    assert result.compiled.stream is not None and result.compiled.stream.policy == "sequential"


@dataclass(frozen=True)
class DropRecvs(ProgramPass):
    """A broken program pass: every recv removed (their sends now go unmatched)."""

    NAME = "test-drop-recvs"

    def rewrite(self, compiled: Compiled) -> Program:
        cores = tuple(
            replace(s, items=tuple(i for i in s.items if getattr(i, "opcode", "") != "recv"))
            for s in compiled.program.cores
        )
        return replace(compiled.program, cores=cores)


def test_validator_runs_after_each_program_pass_when_asked(qgraph: Graph) -> None:
    """The cheap check lets a race through; --validate-each names the pass that made it."""
    compiled = compile_graph(qgraph, arch("tiny"))
    assert any(i.opcode == "recv" for s in compiled.program.cores for i in s.instrs)
    broken = PassManager([DropRecvs()]).run(compiled)  # cheap verify only: not caught
    with pytest.raises(CimcError):
        verify_deep(broken)
    with pytest.raises(CimcError, match=r"pass test-drop-recvs produced invalid IR"):
        PassManager([DropRecvs()], deep_verify_each=True).run(compiled)


SPARSE_STAGES = STAGES.replace("plan-memory,", "plan-memory,plan-sparsity{mode=exact},")


def test_plan_sparsity_none_changes_nothing(qgraph: Graph) -> None:
    plain = run(STAGES, qgraph)
    none = run(STAGES.replace("plan-memory,", "plan-memory,plan-sparsity,"), qgraph)
    assert isinstance(plain, Compiled) and isinstance(none, Compiled)
    assert print_program(none.program) == print_program(plain.program)


def test_plan_sparsity_exact_picks_layers_after_relu(qgraph: Graph) -> None:
    plan = run("tile{arch=tiny},map,plan-values,plan-memory,plan-sparsity{mode=exact}", qgraph)
    assert isinstance(plan, PlannedGraph) and plan.sparsity is not None
    linears = [n for n in qgraph.nodes() if n.op.NAME == "q.linear"]
    # the first layer reads the network input, the second the ReLU's codes
    assert plan.sparsity.layers == (linears[1].name,)
    assert f"sparse %{linears[1].name}: active rows from dram" in str(plan)
    staged = run(SPARSE_STAGES, qgraph)
    assert isinstance(staged, Compiled)
    verify_deep(staged)
    text = print_program(staged.program)
    assert "nzidx" in text and "gather.m" in text and "mload.m" in text
    inputs = default_inputs(qgraph, seed=4)
    out = run_program(staged.program, staged.arch, program_inputs(staged, inputs), staged.consts)
    want = Golden(qgraph).run(inputs).outputs
    for name, got in graph_outputs(staged, out.outputs).items():
        np.testing.assert_array_equal(got, want[name])


def test_plan_sparsity_needs_its_plans_and_a_known_mode(qgraph: Graph) -> None:
    with pytest.raises(CimcError, match="plan-sparsity needs the map and plan-memory passes"):
        run("tile{arch=tiny},map,plan-sparsity", qgraph)
    with pytest.raises(CimcError, match="unknown sparsity 'some'; use one of none, exact"):
        run("tile{arch=tiny},map,plan-values,plan-memory,plan-sparsity{mode=some}", qgraph)


def test_macros_of_fewer_input_bits_are_refused(qgraph: Graph) -> None:
    """The cost model times macro.input_bits bits per input: a 4-bit-input preset cannot
    be priced for the 8-bit codes the quantizer feeds the macros."""
    four = replace(arch("tiny"), macro=replace(arch("tiny").macro, input_bits=4))
    with pytest.raises(
        CimcError,
        match=r"q\.linear feeds the macros 8-bit activation codes but preset 'tiny' has "
        r"macro\.input_bits = 4",
    ):
        compile_graph(qgraph, four)


def test_the_interpreter_refuses_mvm_inputs_wider_than_the_macro(qgraph: Graph) -> None:
    compiled = compile_graph(qgraph, arch("tiny"))
    inputs = program_inputs(compiled, default_inputs(Golden(qgraph).graph, seed=0))
    four = replace(arch("tiny"), macro=replace(arch("tiny").macro, input_bits=4))
    with pytest.raises(
        CimcError,
        match=r"mvm: input \[\d+, \d+\] = -?\d+ is outside the 4-bit inputs of the preset's "
        r"macros \(-8\.\.7",
    ):
        run_program(compiled.program, four, inputs, compiled.consts)
    assert run_program(compiled.program, arch("tiny"), inputs, compiled.consts).outputs
