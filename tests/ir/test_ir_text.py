"""IR text form: print -> parse -> print is exact, and parse errors say line:col and what."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cimc.errors import CimcError
from cimc.ir import DType, Graph, TensorType
from cimc.ir.ops import CANONICAL_OPS, Add, Constant, LayerNorm, Linear, Softmax
from cimc.ir.parser import parse_graph, parse_type
from cimc.ir.printer import print_graph, referenced_constants, save_constants

ALL_OPS = Path(__file__).parent / "data" / "all_ops.ir"


def all_ops_graph() -> Graph:
    return parse_graph(ALL_OPS.read_text(), random_seed=0, source=str(ALL_OPS))


def test_sample_covers_every_registered_op() -> None:
    used = {node.op.NAME for node in all_ops_graph().nodes()}
    assert used == CANONICAL_OPS


def test_round_trip_all_ops_is_exact_including_constant_data(tmp_path: Path) -> None:
    graph = all_ops_graph()
    text = print_graph(graph)
    save_constants(graph, tmp_path / "c.npz")
    again = parse_graph(text, tmp_path / "c.npz")
    assert print_graph(again) == text
    for name, value in graph.constants().items():
        np.testing.assert_array_equal(again.node(name).op.value, value)
        assert again.node(name).op.value.dtype == value.dtype


def test_round_trip_keeps_locations_and_output_order() -> None:
    graph = all_ops_graph()
    again = parse_graph(print_graph(graph), referenced_constants(graph))
    assert again.node("qkv").loc == "layers.0.qkv"
    names = ["hidden", "mean", "cat", "max", "sel", "back", "rmin", "scan"]
    assert [o for o, _ in again.outputs] == names


def test_awkward_names_locations_and_values_round_trip() -> None:
    g = Graph("model/v1")
    x = g.add_input("input.1", TensorType((2, 3), DType.F32))
    special = np.array([-0.0, np.inf, -np.inf, 1e-45, 3.4028235e38, 0.1], np.float32)
    c = g.add_constant(special.reshape(2, 3), name="/const 0")
    y = g.add_node(Add(), [x, c], name='we"ird', loc='file.py:3 "quoted" \u00e9')
    flags = g.add_constant(np.array([True, False]), name="flags")
    g.add_constant(np.full((4, 4), -0.0, np.float32), name="negzero")
    g.add_constant(np.arange(10, dtype=np.int8), name="ramp")
    g.set_outputs([("out put", y), ("flags", flags)])
    text = print_graph(g)
    assert '%"/const 0" = constant dense<[-0.0, inf, -inf, 1e-45, 3.4028235e+38, 0.1]>' in text
    assert "%negzero = constant splat<-0.0> : f32[4, 4]" in text
    assert "%ramp = constant @ramp : i8[10]" in text
    again = parse_graph(text, referenced_constants(g))
    assert print_graph(again) == text
    assert again.node('we"ird').loc == 'file.py:3 "quoted" \u00e9'
    np.testing.assert_array_equal(
        again.node("/const 0").op.value.view(np.uint32), special.reshape(2, 3).view(np.uint32)
    )
    assert np.signbit(again.node("negzero").op.value).all()


def test_attributes_print_sorted_and_floats_exact() -> None:
    g = Graph()
    x = g.add_input("x", TensorType((1, 4, 4), DType.F32))
    s = g.add_node(Softmax(axis=-1), [x])
    g.set_outputs([s])
    text = print_graph(g)
    assert "softmax(%x) {axis = 2}" in text  # normalized before printing
    assert parse_graph(text).node("softmax").op == Softmax(2)
    eps = float(np.float32(1e-5))  # an ONNX float attribute seen as a double
    g2 = Graph()
    y = g2.add_input("y", TensorType((2, 4), DType.F32))
    gm = g2.add_constant(np.ones(4, np.float32), name="g")
    ln = g2.add_node(LayerNorm(eps=eps), [y, gm, gm])
    g2.set_outputs([ln])
    printed = print_graph(g2)
    assert "layer_norm(%y, %g, %g) {eps = 9.999999747378752e-06}" in printed
    assert parse_graph(printed).node(ln).op.eps == eps


def test_comments_and_free_layout_are_accepted() -> None:
    text = """
    // a comment
    graph @g {   %x = input {meaning = "float"} : f32[2]   // trailing comment
      %y = exp(%x)
        : f32[2]
      return "y" = %y }
    """
    g = parse_graph(text)
    assert [n.name for n in g.nodes()] == ["x", "y"]


def test_constants_from_dict_are_checked_against_declared_type() -> None:
    text = 'graph @g {\n  %w = constant @w : f32[3, 3]\n  return "w" = %w\n}\n'
    g = parse_graph(text, {"w": np.eye(3, dtype=np.float32)})
    np.testing.assert_array_equal(g.node("w").op.value, np.eye(3))
    with pytest.raises(CimcError) as info:
        parse_graph(text, {"w": np.eye(3)}, source="t.ir")
    assert str(info.value) == "t.ir:2:17: data for @w is float64[3, 3], not f32[3, 3]"
    with pytest.raises(CimcError) as info:
        parse_graph(text, source="t.ir")
    assert str(info.value) == (
        "t.ir:2:17: no data for @w; give the arrays the text names (its constants)"
    )


def test_constants_npz_path_missing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CimcError, match="constants file not found"):
        parse_graph('graph @g {\n return "a" = %a\n}', tmp_path / "none.npz")


BAD_TEXTS = [
    ("%x = input : f32[2]\n  %y = frobnicate(%x) : f32[2]", "3:8: unknown op 'frobnicate'"),
    ("%x = input : f32[2]\n  %y = z.exp(%x) : f32[2]", "3:8: unknown op 'z.exp'"),
    ("%y = exp(%x) : f32[2]\n  %x = input : f32[2]", "2:12: use of %x before its definition"),
    ("%x = input : f32[2]\n  %x = exp(%x) : f32[2]", "3:3: value %x is defined twice"),
    (
        "%x = input : f32[2]\n  %y = exp(%x) : f32[3]",
        "3:18: %y is declared f32[3] but exp gives f32[2]",
    ),
    (
        "%x = input : f32[2]\n  %y = exp(%x, %x) : f32[2]",
        "3:8: exp takes 1 operand(s), got 2 (in %y)",
    ),
    ("%x = input : f32[2]\n  %y = softmax(%x) : f32[2]", "3:8: softmax needs attribute(s) axis"),
    (
        "%x = input : f32[2]\n  %y = softmax(%x) {dim = 0} : f32[2]",
        "3:27: softmax has no attribute 'dim' (known: axis)",
    ),
    (
        "%x = input : f32[2]\n  %y = softmax(%x) {axis = 1.5} : f32[2]",
        "3:28: softmax: attribute axis must be int",
    ),
    (
        "%x = input : f32[2]\n  %y = cast(%x) {dtype = f64} : f32[2]",
        "3:26: cast: attribute dtype must be a dtype (f32, i64, i32, i16, i8, bool)",
    ),
    ("%x = input : q7[2]", "2:16: unknown dtype 'q7' (valid: f32, i64, i32, i16, i8, bool)"),
    ("%x = input : f32[2]\n  %y = exp(%x) : f32[2] ?", "3:25: unexpected character '?'"),
    ("%x = input : f32[2]\n  %y = exp(%x) f32[2]", "3:16: expected ':', got 'f32'"),
    ('%x = input {meaning = "pixels"} : f32[2]', "2:8: input meaning 'pixels' is not one of"),
    ("%c = constant dense<[1, 2]> : i64[3]", "2:17: dense<...> has 2 elements but i64[3] needs 3"),
    (
        "%c = constant dense<[1.5]> : i64[1]",
        "2:17: expected an integer for a i64 constant, got 1.5",
    ),
]


@pytest.mark.parametrize(("body", "expected"), BAD_TEXTS)
def test_parse_errors_are_located(body: str, expected: str) -> None:
    text = f'graph @g {{\n  {body}\n  return "o" = %x\n}}\n'
    with pytest.raises(CimcError) as info:
        parse_graph(text, source="bad.ir")
    assert str(info.value).startswith("bad.ir:" + expected), str(info.value)


def test_type_rule_errors_are_located_at_the_op() -> None:
    text = """graph @g {
  %x = input : f32[2, 8]
  %w = constant splat<1.0> : f32[4, 3]
  %y = linear(%x, %w) : f32[2, 3]
  return "y" = %y
}"""
    with pytest.raises(CimcError) as info:
        parse_graph(text, source="m.ir")
    assert str(info.value) == (
        "m.ir:4:8: linear input f32[2, 8] has K=8 but weight f32[4, 3] has K=4 (in %y)"
    )


def test_missing_return_and_unknown_output() -> None:
    with pytest.raises(CimcError, match=r"^<ir>:3:1: expected 'return', got '}'"):
        parse_graph("graph @g {\n  %x = input : f32[1]\n}")
    with pytest.raises(CimcError, match=r"2:16: output 'o' uses undefined value %nope"):
        parse_graph('graph @g {\n  return "o" = %nope\n}')


def test_parse_type() -> None:
    assert parse_type("i8[1, 2, 3]") == TensorType((1, 2, 3), DType.I8)
    assert parse_type("bool[]") == TensorType((), DType.BOOL)
    with pytest.raises(CimcError, match="1:5: dimension must be a non-negative integer"):
        parse_type("f32[-1]")


def test_graph_built_by_api_prints_expected_text() -> None:
    g = Graph("tiny")
    x = g.add_input("x", TensorType((1, 3), DType.F32))
    w = g.add_constant(np.arange(6, dtype=np.float32).reshape(3, 2), name="w")
    b = g.add_node(Constant(np.zeros(2, np.float32)), [], name="b")
    y = g.add_node(Linear(), [x, w, b], name="fc", loc="fc/MatMul")
    g.set_outputs([("y", y)])
    assert print_graph(g) == (
        "graph @tiny {\n"
        '  %x = input {meaning = "float"} : f32[1, 3]\n'
        "  %w = constant dense<[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]> : f32[3, 2]\n"
        "  %b = constant dense<[0.0, 0.0]> : f32[2]\n"
        '  %fc = linear(%x, %w, %b) : f32[1, 2] loc("fc/MatMul")\n'
        '  return "y" = %fc\n'
        "}\n"
    )
