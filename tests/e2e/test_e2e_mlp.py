"""Step 1: torch module -> import -> quantize -> compile -> interpreter == golden, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from cimc.backend.builder.compiled import graph_outputs, program_inputs
from cimc.backend.stages.backend import compile_graph
from cimc.machine.interpreter import run_program
from cimc.machine.printer import print_program
from cimc.quant.golden import Golden
from cimc.quant.quantize import quantize_model
from tests.e2e.e2e_helpers import ARCHS, arch, compile_and_verify, float_input, import_module, mlp


@pytest.mark.parametrize("arch_name", ARCHS)
def test_single_linear_bit_exact(arch_name: str) -> None:
    x = float_input((1, 7, 96))
    graph = import_module(mlp((96, 250)), x)
    result, report = compile_and_verify(graph, arch_name, {"input": x})
    assert report.bit_exact and report.mismatched_elements == 0
    assert report.cosine_vs_float > 0.999
    assert [o.shape for o in report.outputs] == [(1, 7, 250)]
    # 96x250 int8 weights: every byte written into a macro exactly once per inference
    assert report.figures["weight_bytes_loaded"] == 96 * 250
    assert report.figures["makespan_cycles"] >= report.figures["lower_bound_cycles"] > 0


@pytest.mark.parametrize("arch_name", ARCHS)
def test_mlp_bit_exact(arch_name: str) -> None:
    x = float_input((3, 5, 40))
    graph = import_module(mlp((40, 70, 33, 24)), x)
    result, report = compile_and_verify(graph, arch_name, {"input": x})
    assert report.bit_exact, report.divergence
    assert report.cosine_vs_float > 0.99
    # every weight byte once, and once more per duplicated copy (auto may take copies)
    stream = result.compiled.stream
    assert stream is not None
    copies = stream.copy_bytes
    assert report.figures["weight_bytes_loaded"] == 40 * 70 + 70 * 33 + 33 * 24 + copies


def test_every_value_and_location_visible() -> None:
    """Every computing node's instructions carry its location; the output decl is named
    after the graph output and the host quantization equals the golden's q.quantize."""
    x = float_input((2, 3, 40))
    qgraph = quantize_model(import_module(mlp((40, 64, 8)), x)).graph
    compiled = compile_graph(qgraph, arch("tiny"))
    text = print_program(compiled.program)
    for node in qgraph.nodes():
        if node.op.NAME in ("q.linear", "q.lut"):
            assert f"; %{node.name} (" in text
    assert ".output  output " in text and ".input   input " in text
    feeds = program_inputs(compiled, {"input": x})
    golden = Golden(qgraph).run({"input": x}, keep_all=True)
    assert np.array_equal(feeds["input"].reshape(2, 3, 40), golden.values["input_q"])
    run = run_program(compiled.program, compiled.arch, feeds, compiled.consts)
    got = graph_outputs(compiled, run.outputs)["output"]
    assert got.dtype == golden.outputs["output"].dtype
    assert np.array_equal(got, golden.outputs["output"])


def test_activation_slots_are_reused() -> None:
    """A deep MLP: slots of dead activations are reused, so the pool is far smaller than
    the sum of all activations."""
    x = float_input((1, 8, 64))
    dims = (64,) * 9
    qgraph = quantize_model(import_module(mlp(dims), x)).graph
    compiled = compile_graph(qgraph, arch("tiny"))
    pool = next(d for d in compiled.program.decls if d.name == "act.gb")
    views = compiled.views
    pooled = [n for n in qgraph.nodes() if n.name in views and views[n.name].symbol == "act.gb"]
    total = sum(compiled.views[n.name].nbytes for n in pooled)
    assert len(pooled) >= 10
    assert pool.nbytes <= 3 * 8 * 64 * 2  # at most three live slots of the widest value
    assert pool.nbytes < total / 3
