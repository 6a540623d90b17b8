"""The idiom passes, tested by execution: random inputs through the graph before and after
give the same outputs (within float rounding: a gelu op is not its decomposition bit for
bit), and the rewritten graph holds the canonical op."""

from __future__ import annotations

from collections import Counter

import idiom_graphs as G
import numpy as np
import pytest

from cimc.ir import Graph
from cimc.ir.parser import parse_graph
from cimc.ir.printer import print_graph
from cimc.passes.check_canonical import canonical_violations
from cimc.passes.idioms import Idioms
from cimc.passes.idioms_activation import GELU
from cimc.passes.manager import PassManager, parse_pipeline
from cimc.passes.patterns import explain
from cimc.reference.float_model import default_inputs, run_graph


def rewritten(text: str, pipeline: str) -> tuple[Graph, Graph]:
    """(the parsed graph, a copy after `pipeline`), after checking both agree on random
    inputs."""
    before = parse_graph(text, random_seed=0)
    after = before.copy()
    PassManager(parse_pipeline(pipeline)).run(after)
    for seed in range(3):
        inputs = default_inputs(before, seed=seed)
        want, got = run_graph(before, inputs), run_graph(after, inputs)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)
    return before, after


def ops(graph: Graph) -> Counter[str]:
    return Counter(n.op.NAME for n in graph.nodes() if n.op.NAME not in ("input", "constant"))


@pytest.mark.parametrize(
    ("text", "pipeline", "expected"),
    [
        (G.LINEAR, "idioms-linear", {"linear": 1}),
        (G.GELU_ERF, "idioms-activation", {"gelu": 1}),
        (G.GELU_TANH, "idioms-activation", {"gelu": 1}),
        (G.SILU, "idioms-activation", {"silu": 1}),
        (G.LAYER_NORM, "idioms-norm", {"layer_norm": 1}),
        (G.RMS_NORM, "idioms-norm", {"rms_norm": 1}),
        (G.ROTARY, "idioms-rotary", {"rotary": 1}),
        (G.ROTARY_UNIT_COS, "idioms-rotary", {"rotary": 1}),
        (G.ATTENTION, "idioms-attention", {"attention": 1}),
        (G.GQA, "idioms-gqa", {"attention": 1, "reshape": 4}),
        (G.GQA, "idioms", {"attention": 1}),
    ],
)
def test_each_idiom_pass_keeps_the_function(text: str, pipeline: str, expected: dict) -> None:
    _, after = rewritten(text, pipeline)
    assert ops(after) == expected


def test_linear_text() -> None:
    """matmul with a constant weight, a [1, N] bias and the flatten/unflatten: one linear
    on the N-D value, named after the root it replaced; the bias becomes [N]."""
    _, after = rewritten(G.LINEAR, "idioms-linear")
    lines = print_graph(after).splitlines()
    assert "  %y = linear(%x, %w, %b.vec) : f32[2, 3, 5]" in lines
    assert lines[3].startswith("  %b.vec = constant dense<") and lines[3].endswith(": f32[5]")


def test_activation_spellings() -> None:
    _, erf = rewritten(G.GELU_ERF, "idioms-activation")
    _, tanh = rewritten(G.GELU_TANH, "idioms-activation")  # x*x*x, 0.5 as 0.25 * 2
    assert erf.node("y").op.approximate == "none" and erf.node("y").inputs == ("x",)
    assert tanh.node("y").op.approximate == "tanh" and tanh.node("y").inputs == ("x",)


def test_a_near_miss_is_refused_with_its_reason() -> None:
    graph = parse_graph(G.GELU_ERF.replace("dense<0.5>", "dense<0.4>"), random_seed=0)
    assert explain(graph, "y", [GELU]) == ["gelu: no: not a product of 0.5 and two run-time values"]
    PassManager(parse_pipeline("idioms-activation")).run(graph)
    assert "gelu" not in ops(graph)


def test_norm_parameters() -> None:
    _, ln = rewritten(G.LAYER_NORM, "idioms-norm")
    norm = ln.node("y")
    assert norm.inputs == ("x", "gamma", "beta") and norm.op.eps == pytest.approx(1e-5)
    _, rms = rewritten(G.RMS_NORM, "idioms-norm")  # gamma stored [1, 1, C], on the left
    assert rms.node("y").inputs == ("x", "gamma.vec") and rms.node("gamma.vec").type.shape == (16,)
    gammaless = G.RMS_NORM.replace("%y = mul(%gamma, %n)", "%y = add(%n, %n)")
    _, plain = rewritten(gammaless, "idioms-norm")
    assert ops(plain) == {"rms_norm": 1, "add": 1}
    assert (plain.constant_value("n.gamma") == 1.0).all()


def test_rotary_tables_are_squeezed() -> None:
    """HF's [1, 1, S, D] cos/sin become [S, D] once only rotary nodes use them."""
    _, after = rewritten(G.ROTARY, "idioms-rotary")
    assert after.node("y").inputs == ("x", "cos", "sin")
    assert after.node("cos").type.shape == (4, 8) and after.node("sin").type.shape == (4, 8)
    _, unit = rewritten(G.ROTARY_UNIT_COS, "idioms-rotary")
    assert (unit.constant_value(unit.node("y").inputs[1]) == 1.0).all()


def test_attention_flags() -> None:
    """The additive causal triangle becomes causal=True; the divisor becomes the scale."""
    _, after = rewritten(G.ATTENTION, "idioms-attention")
    att = after.node("y")
    assert att.inputs == ("q", "k", "v") and att.op.causal
    assert att.op.scale == pytest.approx(1 / 2.828427)


def test_gqa_keeps_the_kv_heads() -> None:
    _, after = rewritten(G.GQA, "idioms")
    att = after.node("y")
    assert [after.node(i).type.shape[1] for i in att.inputs] == [4, 2, 2]
    assert att.inputs[1:] == ("k", "v")


def test_idioms_canonicalize_a_decoder_block() -> None:
    _, after = rewritten(G.DECODER_BLOCK, "idioms")
    assert ops(after) == {
        "rms_norm": 1,
        "linear": 6,
        "rotary": 2,
        "attention": 1,
        "silu": 1,
        "add": 2,
        "reshape": 4,  # q, k and v heads split, o merged
        "transpose": 2,
    }
    assert canonical_violations(after) == []


def test_idioms_is_one_composite_pass() -> None:
    (step,) = parse_pipeline("idioms")
    assert isinstance(step, Idioms)
    names = [p.NAME for p in step.passes()]
    assert names[3:10] == [
        "idioms-conv",
        "conv-to-matmul",
        "idioms-linear",
        "idioms-activation",
        "idioms-norm",
        "idioms-rotary",
        "idioms-attention",
    ]
    assert names[-4] == "idioms-gqa" and names[-1] == "canonicalize"


def test_print_ir_after_a_step_of_idioms() -> None:
    printed: list[str] = []
    graph = parse_graph(G.DECODER_BLOCK, random_seed=0)
    PassManager([Idioms()], print_ir_after=["idioms-norm"], print_fn=printed.append).run(graph)
    (text,) = printed
    assert text.startswith("// ----- IR after idioms-norm ----- //")
    assert "rms_norm(" in text and "rotary(" not in text  # the rotary pass runs later
    printed.clear()
    PassManager([Idioms()], print_ir_after=["idioms"], print_fn=printed.append).run(graph)
    assert [p.splitlines()[0] for p in printed] == [
        "// ----- IR after canonicalize{fold-max-elements=65536,max-iterations=8} ----- //"
    ]
