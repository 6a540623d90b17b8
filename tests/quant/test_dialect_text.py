"""The quantized dialect in IR text: print -> parse -> print is exact, and the parsed graph
is the same integer program (the golden gives the same outputs, bit for bit)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import cimc.ir.ops as O
from cimc.dialects import load_dialects
from cimc.errors import CimcError
from cimc.ir import DType, Graph, TensorType
from cimc.ir.ir_file import read_ir_file, write_ir_file
from cimc.ir.parser import parse_graph
from cimc.ir.printer import print_graph, referenced_constants
from cimc.quant.calibrate import generated_samples
from cimc.quant.dialect import Q_OPS
from cimc.quant.golden import run_golden
from tests.quant.test_quantize import decoder_graph, encoder_graph, linear, quantized


def scores_graph(seed: int = 0) -> Graph:
    """q @ k^T, softmax, a mean over keys, a GELU of a wide residual (ramp + table) and a
    sigmoid of it (-> q.requant, LUT8)."""
    rng = np.random.default_rng(seed)
    g = Graph("scores")
    x = g.add_input("x", TensorType((1, 8, 32), DType.F32))
    q = g.add_node(O.Reshape((1, 8, 4, 8)), [linear(g, rng, x, 32, 32, "q")])
    k = g.add_node(O.Reshape((1, 8, 4, 8)), [linear(g, rng, x, 32, 32, "k")])
    q = g.add_node(O.Transpose((0, 2, 1, 3)), [q], "q_t")
    kt = g.add_node(O.Transpose((0, 2, 3, 1)), [k], "k_t")
    scores = g.add_node(O.Softmax(axis=3), [g.add_node(O.MatMul(), [q, kt], "qk")], "p")
    mean = g.add_node(O.ReduceMean(axes=(3,), keepdim=False), [scores], "mean")
    residual = g.add_node(O.Add(), [x, linear(g, rng, x, 32, 32, "o")], "res")
    act = g.add_node(O.Gelu("none"), [residual], "gelu")
    gate = g.add_node(O.Sigmoid(), [residual], "gate")
    g.set_outputs([("mean", mean), ("act", act), ("gate", gate)])
    return g


GRAPHS: dict[str, Callable[[], Graph]] = {
    "encoder": encoder_graph,
    "decoder": decoder_graph,
    "scores": scores_graph,
}
QUANTIZED = {name: quantized(make()) for name, make in GRAPHS.items()}


def test_the_graphs_hold_every_q_op() -> None:
    used = {n.op.NAME for q in QUANTIZED.values() for n in q.nodes()}
    assert {cls.NAME for cls in Q_OPS} <= used


@pytest.mark.parametrize("name", GRAPHS)
def test_print_parse_print_is_exact_and_golden_agrees(name: str) -> None:
    q = QUANTIZED[name]
    text = print_graph(q)
    again = parse_graph(text, referenced_constants(q), source=f"{name}.ir")
    assert print_graph(again) == text
    for a, b in zip(q.nodes(), again.nodes(), strict=True):
        assert a.op == b.op and a.op.key() == b.op.key(), a.name
    inputs = generated_samples(GRAPHS[name](), 1, seed=3)[0]
    want, got = run_golden(q, inputs).outputs, run_golden(again, inputs).outputs
    assert want.keys() == got.keys()
    for out in want:
        assert want[out].dtype == got[out].dtype and np.array_equal(want[out], got[out]), out


def test_a_changed_plan_array_is_a_different_op() -> None:
    """Equality compares every bit of a plan: one weight code changed makes another op."""
    q = QUANTIZED["encoder"]
    arrays = dict(referenced_constants(q))
    weight = arrays["q.plan.weight"].copy()
    weight[0, 0] ^= 1
    again = parse_graph(print_graph(q), {**arrays, "q.plan.weight": weight})
    assert again.node("q").op != q.node("q").op
    assert again.node("k").op == q.node("k").op


def test_plans_print_field_by_field() -> None:
    text = print_graph(QUANTIZED["encoder"])
    line = next(s for s in text.splitlines() if s.startswith("  %att = q.attention("))
    assert "plan = AttentionPlan<logits = Requant<mult = dense<" in line
    assert "exp_hi = @att.plan.exp_hi : i32[256], exp_lo = @att.plan.exp_lo : i32[256]" in line
    assert "lo = -127, hi = 127, causal = false>" in line


def test_files_round_trip_with_a_safetensors_side_file(tmp_path: Path) -> None:
    q = QUANTIZED["decoder"]
    side = write_ir_file(q, tmp_path / "dec.ir")
    assert side == tmp_path / "dec.ir.safetensors" and side.is_file()
    again = read_ir_file(tmp_path / "dec.ir")
    assert print_graph(again) == print_graph(q)


def test_a_plan_array_name_taken_by_a_constant_gets_a_suffix() -> None:
    g = Graph("clash")
    x = g.add_input("x", TensorType((1, 32), DType.F32))
    rng = np.random.default_rng(0)
    g.set_outputs([("y", linear(g, rng, x, 32, 32, "fc"))])
    q = quantized(g)
    c = q.add_constant(rng.normal(size=(4, 4)).astype(np.float32), "fc.plan.weight")
    q.set_outputs([*q.outputs, ("c", c)])
    text = print_graph(q)
    assert "weight = @fc.plan.weight_1 : i8[32, 32]" in text
    again = parse_graph(text, referenced_constants(q))
    assert print_graph(again) == text
    assert np.array_equal(again.node("fc").op.plan.weight, q.node("fc").op.plan.weight)


def test_decode_ops_round_trip() -> None:
    from cimc.decode.ops import DecodeAttention, DecodeRotary
    from cimc.quant.plans import plan_attention, plan_rotary

    load_dialects()
    g = Graph("decode")
    ids = [g.add_input(n, TensorType((1, 2, 1, 8), DType.I8), "float") for n in "qkv"]
    pos = g.add_input("pos", TensorType((1, 1), DType.I64), "position_ids")
    ang = np.outer(np.arange(16), np.linspace(0.1, 1.0, 8))
    rot = plan_rotary(np.cos(ang), np.sin(ang), 0.01, 0.01, 8)
    r = g.add_node(DecodeRotary(scale=0.01, bits=8, plan=rot), [ids[0], pos], "rot")
    att = plan_attention(0.01, 0.01, 0.01, 0.35, 0.01, 8, 8, 4.0, causal=True)
    a = g.add_node(DecodeAttention(scale=0.01, bits=8, plan=att, capacity=16), [r, *ids[1:], pos])
    g.set_outputs([("y", a)])
    text = print_graph(g)
    assert "decode.attention(%rot, %k, %v, %pos) {bits = 8, capacity = 16" in text
    again = parse_graph(text, referenced_constants(g))
    assert print_graph(again) == text
    assert [n.op for n in again.nodes()] == [n.op for n in g.nodes()]


_RQ = "requant = Requant<mult = splat<9> : i64[], shift = splat<3> : i64[], lo = -127, hi = 127>"
_W = "weight = splat<1> : i8[32, 4]"
PLAN_ERRORS = [
    (
        f"LinearPlan<weight = splat<1> : i16[32, 4], bias = splat<0> : i32[4], {_RQ}>",
        "3:8: q.linear: LinearPlan.weight must be i8 of rank 2, got int16[32, 4]",
    ),
    (
        f"LinearPlan<{_W}, bias = splat<0> : i32[4], {_RQ.replace('i64[]', 'i64[2, 2]', 1)}>",
        "q.linear: Requant.mult must be i64 of rank 0/1, got int64[2, 2]",
    ),
    (f"LinearPlan<{_W}, bias = splat<0> : i32[3], {_RQ}>", "3:8: q.linear bias must be [4]"),
    (
        f"LinearPlan<{_W}, bias = splat<0> : i32[4], {_RQ.replace('i64[]', 'i64[2]')}>",
        "q.linear requant multipliers must be [] or [4] (in %y)",
    ),
    ("LinearPlan<weight = splat<1> : i8[32, 4]>", "LinearPlan needs field(s) bias, requant"),
    ("AddPlan<mult_a = 1>", "expected LinearPlan<...>"),
    ("LinearPlan<weight = 3>", "LinearPlan: attribute weight must be an array"),
    (
        "LinearPlan<hue = 3>",
        "LinearPlan has no attribute 'hue' (known: bias, group_mult, group_size, requant, "
        "weight, weight_bits)",
    ),
]


@pytest.mark.parametrize(("plan", "message"), PLAN_ERRORS)
def test_bad_plans_are_located_errors(plan: str, message: str) -> None:
    load_dialects()
    text = (
        'graph @g {\n  %x = input {meaning = "float"} : i8[1, 32]\n'
        f"  %y = q.linear(%x) {{bits = 8, plan = {plan}, scale = 0.5}} : i8[1, 4]\n"
        '  return "y" = %y\n}\n'
    )
    with pytest.raises(CimcError) as info:
        parse_graph(text, source="bad.ir")
    assert str(info.value).startswith("bad.ir:3:"), str(info.value)
    assert message in str(info.value)
