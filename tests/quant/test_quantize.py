"""The quantize pass, by execution: float graph vs dequantized integer golden.

Every test builds a small canonical graph, calibrates on generated inputs (seeds 0..7),
quantizes, and compares on different inputs (seeds 100..103). Bounds are cosine
similarities of the dequantized golden vs the float reference, plus structural facts
of the quantized graph (op kinds, widths) that could be wrong.
"""

from __future__ import annotations

import numpy as np
import pytest

from cimc.errors import CimcError
from cimc.ir import DType, Graph, TensorType
from cimc.ir import ops as O
from cimc.ir.printer import print_graph
from cimc.passes.manager import PassManager, parse_pipeline
from cimc.passes.quantize import Quantize  # importing registers the pass
from cimc.quant.accuracy import accuracy_report
from cimc.quant.calibrate import calibrate, calibration_data, generated_samples
from cimc.quant.dialect import QOp
from cimc.quant.golden import output_scales, run_golden
from cimc.quant.quantize import QuantOptions, quantize_graph, quantize_model
from cimc.quant.scales import Precision
from cimc.quant.smooth import SEARCH_ALPHAS

B, S, C, H, D, FF, V = 1, 8, 32, 4, 8, 64, 50


def weight(rng: np.random.Generator, *shape: int, scale: float | None = None) -> np.ndarray:
    s = shape[0] ** -0.5 if scale is None else scale
    return rng.normal(0, s, shape).astype(np.float32)


def encoder_graph(seed: int = 0, causal: bool = False) -> Graph:
    """Embedding + pre-LN attention block + GELU MLP, with an int64 mask input."""
    rng = np.random.default_rng(seed)
    g = Graph("enc")
    ids = g.add_input("input_ids", TensorType((B, S), DType.I64), "token_ids")
    am = g.add_input("attention_mask", TensorType((B, S), DType.I64), "attention_mask")
    x = g.add_node(O.Embedding(), [ids, g.add_constant(weight(rng, V, C, scale=1.0))], "emb")
    pos = g.add_constant(weight(rng, B, S, C, scale=0.3), "pos")
    x = g.add_node(O.Add(), [x, pos], "x0")
    mask = g.add_node(O.Cast(DType.BOOL), [am], "mask")
    mask = g.add_node(O.Reshape((B, 1, 1, S)), [mask], "mask4")
    ln = layer_norm(g, rng, x, "ln1")
    heads = []
    for name in ("q", "k", "v"):
        y = linear(g, rng, ln, C, C, name)
        y = g.add_node(O.Reshape((B, S, H, D)), [y], f"{name}_r")
        heads.append(g.add_node(O.Transpose((0, 2, 1, 3)), [y], f"{name}_t"))
    att = g.add_node(O.Attention(scale=D**-0.5, causal=causal), [*heads, mask], "att")
    att = g.add_node(O.Transpose((0, 2, 1, 3)), [att], "att_t")
    att = g.add_node(O.Reshape((B, S, C)), [att], "att_r")
    x = g.add_node(O.Add(), [x, linear(g, rng, att, C, C, "o")], "x1")
    h = linear(g, rng, layer_norm(g, rng, x, "ln2"), C, FF, "fc1")
    h = g.add_node(O.Gelu("none"), [h], "gelu")
    x = g.add_node(O.Add(), [x, linear(g, rng, h, FF, C, "fc2")], "x2")
    g.set_outputs([("hidden", layer_norm(g, rng, x, "ln_f"))])
    return g


def linear(g: Graph, rng: np.random.Generator, x: str, k: int, n: int, name: str) -> str:
    w = g.add_constant(weight(rng, k, n), f"{name}.w")
    b = g.add_constant(weight(rng, n, scale=0.05), f"{name}.b")
    return g.add_node(O.Linear(), [x, w, b], name, loc=f"/{name}/MatMul")


def layer_norm(g: Graph, rng: np.random.Generator, x: str, name: str) -> str:
    gamma = g.add_constant((1 + weight(rng, C, scale=0.1)).astype(np.float32), f"{name}.g")
    beta = g.add_constant(weight(rng, C, scale=0.05), f"{name}.b")
    return g.add_node(O.LayerNorm(eps=1e-5), [x, gamma, beta], name)


def quantized(graph: Graph, options: QuantOptions | None = None) -> Graph:
    calib = calibrate(graph, calibration_data(graph, None, count=8, seed=0))
    return quantize_graph(graph, calib, options)


def min_cosine(graph: Graph, qgraph: Graph) -> float:
    return accuracy_report(graph, qgraph, generated_samples(graph, 4, seed=100)).min_cosine()


def qop(graph: Graph, name: str) -> QOp:
    op = graph.node(name).op
    assert isinstance(op, QOp), f"%{name} is {op.NAME}, not a q-op"
    return op


def op_names(graph: Graph) -> list[str]:
    return [n.op.NAME for n in graph.nodes()]


def test_encoder_block_is_lowered_and_accurate() -> None:
    g = encoder_graph()
    q = quantized(g)
    names = op_names(q)
    assert not any(n in names for n in ("linear", "layer_norm", "attention", "gelu", "add"))
    assert names.count("q.linear") == 6 and names.count("q.layer_norm") == 3
    assert all(n.type.dtype is not DType.F32 for n in q.nodes())
    assert min_cosine(g, q) >= 0.999


def test_precision_choices_follow_the_readers() -> None:
    q = quantized(encoder_graph())
    dtype = {n.name: n.type.dtype for n in q.nodes()}
    assert dtype["x1"] is DType.I16 and dtype["x2"] is DType.I16  # residual stream
    assert dtype["emb"] is DType.I16  # read by the residual add
    assert dtype["q"] is DType.I8  # read by attention
    assert dtype["fc1"] is DType.I16  # read by a GELU: the ramp + table recipe takes int16
    assert q.node("gelu").op.NAME == "q.lut.ramp"
    assert dtype["ln2"] is DType.I8  # read by a linear only
    assert dtype["ln_f"] is DType.I16  # graph output
    assert dtype["pos_q"] is DType.I16  # a float constant added to the stream


def test_wide_values_needing_int8_get_one_requant() -> None:
    g = Graph("requant")
    x = g.add_input("x", TensorType((2, C), DType.F32))
    rng = np.random.default_rng(1)
    r = g.add_node(O.Add(), [x, x], "r")
    a, b = linear(g, rng, r, C, C, "a"), linear(g, rng, r, C, C, "b")  # both need int8
    ab = g.add_node(O.Add(), [a, b], "ab")
    g.set_outputs([("y", g.add_node(O.Add(), [ab, r], "y"))])  # r read by an add: int16
    q = quantized(g)
    assert op_names(q).count("q.requant") == 1
    assert q.node("a").inputs == q.node("b").inputs == ("r_i8",)
    assert q.node("x_q").op.NAME == "q.quantize"  # host-side quantization of a float input
    assert min_cosine(g, q) >= 0.999


def test_all_int8_is_less_accurate_than_mixed() -> None:
    g = encoder_graph(seed=3)
    mixed, int8 = quantized(g), quantized(g, QuantOptions(Precision(wide=())))
    assert {n.type.dtype for n in int8.nodes() if isinstance(n.op, QOp)} == {DType.I8}
    assert {n.type.dtype for n in mixed.nodes() if isinstance(n.op, QOp)} == {DType.I8, DType.I16}
    cos_mixed, cos_int8 = min_cosine(g, mixed), min_cosine(g, int8)
    assert cos_mixed >= 0.999 and cos_int8 >= 0.99
    assert 1 - cos_mixed < (1 - cos_int8) / 2  # int16 cuts the error (measured 3.7x)


def test_causal_attention_with_padding_mask() -> None:
    g = encoder_graph(seed=2, causal=True)
    q = quantized(g)
    samples = generated_samples(g, 3, seed=200)
    for s in samples:
        s["attention_mask"][0, -2:] = 0
    assert accuracy_report(g, q, samples).min_cosine() >= 0.999


def decoder_graph(seed: int = 0) -> Graph:
    """RMSNorm, rotary, GQA attention, SiLU-gated MLP, a bool mask and a float input."""
    rng = np.random.default_rng(seed)
    g = Graph("dec")
    x = g.add_input("x", TensorType((B, S, C), DType.F32))
    m = g.add_input("mask", TensorType((B, 1, 1, S), DType.BOOL), "attention_mask")
    gamma = g.add_constant((1 + weight(rng, C, scale=0.1)).astype(np.float32), "g1")
    h = g.add_node(O.RmsNorm(eps=1e-6), [x, gamma], "rms")
    ang = np.outer(np.arange(S), 10000.0 ** -(np.arange(0, D, 2) / D))
    ang = np.concatenate([ang, ang], 1)
    cos = g.add_constant(np.cos(ang).astype(np.float32), "cos")
    sin = g.add_constant(np.sin(ang).astype(np.float32), "sin")
    heads = {}
    for name, nh in (("q", H), ("k", 2), ("v", 2)):
        y = linear(g, rng, h, C, nh * D, name)
        y = g.add_node(O.Reshape((B, S, nh, D)), [y], f"{name}_r")
        y = g.add_node(O.Transpose((0, 2, 1, 3)), [y], f"{name}_t")
        heads[name] = g.add_node(O.Rotary(), [y, cos, sin], f"{name}_rot") if name != "v" else y
    att = g.add_node(O.Attention(scale=D**-0.5, causal=True), [*heads.values(), m], "att")
    att = g.add_node(O.Reshape((B, S, C)), [g.add_node(O.Transpose((0, 2, 1, 3)), [att])])
    x = g.add_node(O.Add(), [x, linear(g, rng, att, C, C, "o")], "x1")
    gate = g.add_node(O.Silu(), [linear(g, rng, x, C, FF, "gate")], "silu")
    up = g.add_node(O.Mul(), [gate, linear(g, rng, x, C, FF, "up")], "gated")
    x = g.add_node(O.Sub(), [x, linear(g, rng, up, FF, C, "down")], "x2")
    half = g.add_constant(np.array(2.0, np.float32), "two")
    g.set_outputs([("y", g.add_node(O.Div(), [x, half], "y"))])
    return g


def test_decoder_block_with_gqa_rotary_and_bool_mask() -> None:
    g = decoder_graph()
    q = quantized(g)
    mask_input = q.node("mask")
    assert mask_input.type.dtype is DType.I8  # bool masks become int8 0/1 inputs
    assert q.node("mask_bool").op.NAME == "cast"
    assert {"q.rotary", "q.rms_norm", "q.attention", "q.lut.ramp", "q.mul", "q.add"} <= set(
        op_names(q)
    )
    samples = generated_samples(g, 4, seed=100)
    for s in samples:
        s["mask"] = np.ones_like(s["mask"])
    assert accuracy_report(g, q, samples).min_cosine() >= 0.999


def test_softmax_matmul_and_concat() -> None:
    rng = np.random.default_rng(4)
    g = Graph("sm")
    x = g.add_input("x", TensorType((2, 6, 16), DType.F32))
    a = linear_k(g, rng, x, 16, 16, "a")
    logits = g.add_node(O.MatMul(), [a, g.add_node(O.Transpose((0, 2, 1)), [x])], "logits")
    p = g.add_node(O.Softmax(axis=-1), [logits], "p")
    y = g.add_node(O.MatMul(), [p, x], "pv")
    g.set_outputs([("y", g.add_node(O.Concat(axis=-1), [y, a], "cat"))])
    q = quantized(g)
    assert {"q.softmax", "q.matmul"} <= set(op_names(q))
    assert q.node("p").type.dtype is DType.I8  # read by a matmul: int8, codes in [0, 127]
    assert min_cosine(g, q) >= 0.995


def linear_k(g: Graph, rng: np.random.Generator, x: str, k: int, n: int, name: str) -> str:
    return g.add_node(O.Linear(), [x, g.add_constant(weight(rng, k, n), f"{name}.w")], name)


def test_op_without_recipe_is_a_located_error() -> None:
    g = Graph("bad")
    x = g.add_input("x", TensorType((2, 4), DType.F32))
    square = g.add_node(O.Pow(2.0), [x], "square", loc="/blk/Pow")
    g.set_outputs([("y", square)])
    with pytest.raises(CimcError) as e:
        quantized(g)
    assert e.value.location == "%square (/blk/Pow)"
    assert "no integer recipe for op pow" in e.value.message


def test_reductions() -> None:
    g = Graph("reduce")
    x = g.add_input("x", TensorType((2, 6, C), DType.F32))
    mean = g.add_node(O.ReduceMean((2,), True), [x], "mean")
    centered = g.add_node(O.Sub(), [x, mean], "centered")
    top = g.add_node(O.ReduceMax((1,), False), [centered], "top")
    total = g.add_node(O.ReduceSum((0, 2), False), [x], "total")
    g.set_outputs([("top", top), ("total", total)])
    q = quantized(g)
    assert op_names(q).count("q.reduce") == 3 and q.node("top").type.shape == (2, C)
    assert min_cosine(g, q) >= 0.999


def test_nan_in_calibration_names_the_value() -> None:
    g = Graph("nan")
    x = g.add_input("x", TensorType((2, 4), DType.F32))
    g.set_outputs([("y", g.add_node(O.Sqrt(), [x], "root", loc="/blk/Sqrt"))])
    with pytest.raises(CimcError, match="NaN") as e:
        quantized(g)
    assert e.value.location == "%root (/blk/Sqrt)"


def test_division_by_a_run_time_value_is_refused() -> None:
    g = Graph("div")
    x = g.add_input("x", TensorType((2, 4), DType.F32))
    g.set_outputs([("y", g.add_node(O.Div(), [x, x], "ratio"))])
    with pytest.raises(CimcError, match="constant divisor"):
        quantized(g)


def test_outputs_carry_scales_and_printing_is_deterministic() -> None:
    g = encoder_graph()
    q1, q2 = quantized(g), quantized(encoder_graph())
    scales = output_scales(q1)
    assert set(scales) == {"hidden"} and scales["hidden"] == qop(q1, "ln_f").scale
    text = print_graph(q1)
    assert text == print_graph(q2)
    assert "%q = q.linear(%ln1) {bits = 8, plan = LinearPlan<weight = @q.plan.weight" in text


def test_pass_through_the_pipeline(capsys: pytest.CaptureFixture[str]) -> None:
    g = encoder_graph()
    passes = parse_pipeline("quantize{samples=4,wide=residual+norm+output}")
    q = PassManager(passes).run(g)
    assert "generated inputs" in capsys.readouterr().err
    assert q is not g and "q.attention" in op_names(q) and "attention" in op_names(g)
    assert isinstance(passes[0], Quantize)
    expected = quantize_model(g, samples=4, options=passes[0].options())
    assert print_graph(q) == print_graph(expected.graph)


def test_pass_options() -> None:
    (p,) = parse_pipeline("quantize{wide=none,smooth=0,headroom=1.5,p-bits=7,act-bits=8}")
    assert isinstance(p, Quantize)
    opts = p.options()
    assert opts.precision.wide == () and opts.precision.wide_headroom == 1.5
    assert opts.smooth_alphas == () and opts.attention_p_bits == 7
    (auto,) = parse_pipeline("quantize")
    assert isinstance(auto, Quantize) and auto.options().smooth_alphas == SEARCH_ALPHAS
    (fixed,) = parse_pipeline("quantize{smooth=0.6}")
    assert isinstance(fixed, Quantize) and fixed.options().smooth_alphas == (0.6,)
    (bad,) = parse_pipeline("quantize{smooth=often}")
    with pytest.raises(CimcError, match="smooth must be 'auto' or an alpha"):
        bad.options()  # type: ignore[attr-defined]
    with pytest.raises(CimcError, match="unknown wide category 'residue'"):
        PassManager(parse_pipeline("quantize{wide=residue}")).run(encoder_graph())
    with pytest.raises(CimcError, match="activation widths must be 8 or 16, got 4"):
        PassManager(parse_pipeline("quantize{act-bits=4}")).run(encoder_graph())


def test_golden_matches_on_inputs_given_as_bool_or_int8() -> None:
    g = decoder_graph(seed=5)
    q = quantized(g)
    s = generated_samples(g, 1, seed=9)[0]
    s["mask"] = np.ones((B, 1, 1, S), bool)
    as_int8 = dict(s, mask=s["mask"].astype(np.int8))
    a, b = run_golden(q, s).outputs["y"], run_golden(q, as_int8).outputs["y"]
    assert a.dtype == np.int16 and np.array_equal(a, b)


def test_q_op_type_rules() -> None:
    from cimc.quant.dialect import QLinear
    from cimc.quant.plans import plan_linear

    w = np.random.default_rng(0).normal(0, 0.1, (C, 4)).astype(np.float32)
    g = Graph("qops")
    x16 = g.add_input("x16", TensorType((2, C), DType.I16))
    x8 = g.add_input("x8", TensorType((2, C), DType.I8))
    plan16 = plan_linear(w, None, 0.01, 0.001, 16)
    with pytest.raises(CimcError, match="operand 0 \\(int8 codes\\) must be i8") as e:
        g.add_node(QLinear(scale=0.001, bits=16, plan=plan16), [x16], "lin", loc="/l")
    assert e.value.location == "%lin (/l)"
    with pytest.raises(CimcError, match="plan exceeds 8 bits"):
        g.add_node(QLinear(scale=0.001, bits=8, plan=plan16), [x8])
    with pytest.raises(CimcError, match="bits must be 8 or 16"):
        QLinear(scale=0.001, bits=12, plan=plan16)
    with pytest.raises(CimcError, match="plan must be LinearPlan<...>, got a Requant$"):
        QLinear(scale=0.001, bits=8, plan=plan16.requant)  # type: ignore[arg-type]
    y = g.add_node(QLinear(scale=0.001, bits=16, plan=plan16), [x8], "ok")
    assert g.node(y).type == TensorType((2, 4), DType.I16)


def test_inserted_nodes_never_take_a_source_name() -> None:
    g = Graph("names")
    x = g.add_input("x", TensorType((2, C), DType.F32))
    rng = np.random.default_rng(2)
    y = g.add_node(O.Add(), [x, x], "x_q")  # the name the quantize node would like
    z = linear(g, rng, y, C, C, "x_q_i8")  # and the requant's
    g.set_outputs([("y", g.add_node(O.Add(), [y, z], "out"))])
    q = quantized(g)
    assert q.node("x_q").op.NAME == "q.add" and q.node("x_q_i8").op.NAME == "q.linear"
    assert q.node("x_q_1").op.NAME == "q.quantize"
    rows = accuracy_report(g, q, generated_samples(g, 2, seed=5), per_value=True).values
    assert [r.name for r in rows] == ["x_q", "x_q_i8", "out"]  # matched by source name


def test_one_pass_attention_weights() -> None:
    g = encoder_graph(seed=6)
    q7 = quantized(g, QuantOptions(attention_p_bits=7))
    assert getattr(qop(q7, "att"), "plan").p_max == 127  # noqa: B009
    assert getattr(qop(quantized(g), "att"), "plan").p_max == 16383  # noqa: B009
    assert min_cosine(g, q7) >= 0.999


@pytest.mark.parametrize("per_channel", [True, False])
def test_mul_by_a_positive_constant_is_one_requant(per_channel: bool) -> None:
    g = Graph("scaled")
    x = g.add_input("x", TensorType((2, C), DType.F32))
    r = g.add_node(O.Add(), [x, x], "r")  # an int16 value
    rng = np.random.default_rng(7)
    c = rng.uniform(0.05, 3.0, C if per_channel else 1).astype(np.float32)
    g.set_outputs([("y", g.add_node(O.Mul(), [r, g.add_constant(c)], "y"))])
    q = quantized(g)
    op = qop(q, "y")
    assert op.NAME == "q.requant" and q.node("y").inputs == ("r",)
    assert getattr(op, "plan").mult.shape == ((C,) if per_channel else ())  # noqa: B009
    sample = generated_samples(g, 1, seed=3)[0]
    got = run_golden(q, sample).outputs["y"].astype(np.float64) * op.scale
    rq = run_golden(q, sample, keep_all=True).values["r"].astype(np.float64) * qop(q, "r").scale
    assert np.abs(got - rq * c).max() <= op.scale / 2 + 1e-12  # one rounding of exact codes


def test_mul_by_a_negative_constant_stays_a_product() -> None:
    g = Graph("negative")
    x = g.add_input("x", TensorType((2, C), DType.F32))
    c = np.linspace(-1.0, 1.0, C).astype(np.float32)
    g.set_outputs([("y", g.add_node(O.Mul(), [x, g.add_constant(c)], "y"))])
    assert qop(quantized(g), "y").NAME == "q.mul"
