"""Graph API: building, normalization, deterministic order, rewriting and the verifier."""

from __future__ import annotations

import numpy as np
import pytest

from cimc.errors import CimcError
from cimc.ir import DType, Graph, TensorType
from cimc.ir.ops import (
    Add,
    Attention,
    Cast,
    Concat,
    Embedding,
    Exp,
    Expand,
    Gather,
    Input,
    Linear,
    MatMul,
    ReduceSum,
    Reshape,
    Rotary,
    Slice,
    Softmax,
    Transpose,
    Where,
)

F32 = DType.F32


def small_graph() -> tuple[Graph, str, str, str]:
    g = Graph("g")
    x = g.add_input("x", TensorType((2, 4), F32))
    e = g.add_node(Exp(), [x], name="e")
    s = g.add_node(Add(), [e, x], name="s")
    g.set_outputs([("out", s)])
    return g, x, e, s


def test_names_are_uniquified_deterministically() -> None:
    g = Graph()
    x = g.add_input("x", TensorType((3,), F32))
    names = [g.add_node(Exp(), [x]) for _ in range(3)]
    assert names == ["exp", "exp_1", "exp_2"]
    assert g.add_node(Exp(), [x], name="x") == "x_1"
    with pytest.raises(CimcError, match="graph input name 'x' is already used"):
        g.add_input("x", TensorType((3,), F32))


def test_topological_order_breaks_ties_by_insertion() -> None:
    g = Graph()
    a = g.add_input("a", TensorType((2,), F32))
    b = g.add_input("b", TensorType((2,), F32))
    late = g.add_node(Exp(), [b], name="late")
    s = g.add_node(Add(), [a, late], name="s")
    early = g.add_node(Exp(), [a], name="early")
    g.set_outputs([s, early])
    assert [n.name for n in g.nodes()] == ["a", "b", "late", "s", "early"]
    # Rewiring `late` to use a node created after it moves it after that node.
    g.set_inputs(late, [early])
    assert [n.name for n in g.nodes()] == ["a", "b", "early", "late", "s"]


def test_ops_are_normalized_on_insertion() -> None:
    g = Graph()
    x = g.add_input("x", TensorType((2, 3, 8), F32))
    assert g.node(g.add_node(Softmax(-1), [x])).op == Softmax(2)
    assert g.node(g.add_node(Reshape((-1, 8)), [x])).type.shape == (6, 8)
    assert g.node(g.add_node(Transpose((0, -1, 1)), [x])).op == Transpose((0, 2, 1))
    assert g.node(g.add_node(Slice(-1, -3, 100), [x])).op == Slice(2, 5, 8, 1)
    assert g.node(g.add_node(Slice(1, 2, 1), [x])).type.shape == (2, 0, 8)  # empty, clamped
    assert g.node(g.add_node(Gather(1, -1), [x])).op == Gather(1, 2)
    assert g.node(g.add_node(ReduceSum((-1, 0, 2)), [x])).op == ReduceSum((0, 2))
    assert g.node(g.add_node(Concat(-2), [x, x])).type.shape == (2, 6, 8)


def test_type_rules_infer_and_reject() -> None:
    g = Graph()
    q = g.add_input("q", TensorType((1, 8, 5, 4), F32))
    kv = g.add_input("kv", TensorType((1, 2, 7, 4), F32))
    mask = g.add_input("mask", TensorType((1, 1, 1, 7), DType.BOOL), "attention_mask")
    att = g.add_node(Attention(scale=0.5, causal=True), [q, kv, kv, mask])
    assert g.node(att).type == TensorType((1, 8, 5, 4), F32)
    bad_kv = g.add_input("bad_kv", TensorType((1, 3, 7, 4), F32))
    with pytest.raises(CimcError, match=r"^%attention_1: attention needs Hq % Hkv == 0"):
        g.add_node(Attention(scale=0.5), [q, bad_kv, bad_kv])
    with pytest.raises(CimcError, match=r"attention mask must be bool, got f32\[1, 8, 5, 4\]"):
        g.add_node(Attention(scale=0.5), [q, kv, kv, q])
    a = g.add_input("a", TensorType((3, 1, 4, 5), F32))
    b = g.add_input("b", TensorType((2, 5, 6), F32))
    assert g.node(g.add_node(MatMul(), [a, b])).type.shape == (3, 2, 4, 6)
    with pytest.raises(CimcError, match=r"matmul K mismatch: f32\[2, 5, 6\] @ f32\[3, 1, 4, 5\]"):
        g.add_node(MatMul(), [b, a])
    cos = g.add_input("cos", TensorType((7, 4), F32))
    assert g.node(g.add_node(Rotary(), [kv, cos, cos])).type == g.node(kv).type
    with pytest.raises(CimcError, match="rotary cos f32\\[7, 4\\] does not broadcast"):
        g.add_node(Rotary(), [q, cos, cos])
    with pytest.raises(CimcError, match=r"cannot expand f32\[7, 4\] to \[2, 7, 5\]"):
        g.add_node(Expand((2, 7, 5)), [cos])
    with pytest.raises(CimcError, match=r"where branches must have one dtype, got bool, f32"):
        g.add_node(Where(), [mask, mask, kv])


def test_constant_operands_and_dtypes_are_enforced() -> None:
    g = Graph()
    ids = g.add_input("ids", TensorType((1, 4), DType.I64), "token_ids")
    x = g.add_input("x", TensorType((1, 4, 8), F32))
    table = g.add_constant(np.zeros((10, 8), np.float32), name="table")
    assert g.node(g.add_node(Embedding(), [ids, table])).type.shape == (1, 4, 8)
    with pytest.raises(CimcError, match=r"operand 1 \(%x\) of linear must be a constant"):
        g.add_node(Linear(), [x, x], loc="onnx::MatMul_7")
    with pytest.raises(CimcError, match="embedding ids must be i64/i32/i16/i8, got f32"):
        g.add_node(Embedding(), [x, table])
    with pytest.raises(CimcError, match="numpy dtype float64 has no IR dtype"):
        g.add_constant(np.zeros(3))
    with pytest.raises(CimcError, match="add operands must have one dtype, got f32, i64"):
        g.add_node(Add(), [x, ids])
    assert g.node(g.add_node(Cast(DType.I8), [x])).type == TensorType((1, 4, 8), DType.I8)


def test_errors_name_node_and_source_location() -> None:
    g = Graph()
    x = g.add_input("x", TensorType((2, 3), F32))
    w = g.add_constant(np.zeros((4, 5), np.float32), name="w")
    with pytest.raises(CimcError) as info:
        g.add_node(Linear(), [x, w], name="fc1", loc="/encoder/fc1/MatMul")
    assert str(info.value) == (
        "%fc1 (/encoder/fc1/MatMul): linear input f32[2, 3] has K=3 but weight f32[4, 5] has K=4"
    )
    with pytest.raises(CimcError, match=r"^%exp: operand %nope of exp is not defined$"):
        g.add_node(Exp(), ["nope"])
    with pytest.raises(CimcError, match=r"^%exp: exp takes 1 operand\(s\), got 2$"):
        g.add_node(Exp(), [x, x])


def test_users_replace_all_uses_and_remove() -> None:
    g, x, e, s = small_graph()
    assert g.users(x) == [e, s]
    neg = g.add_node(Exp(), [e], name="e2")
    assert g.replace_all_uses(e, neg) == 1  # the use inside %e2 itself is kept
    assert g.node(s).inputs == (neg, x)
    assert g.replace_all_uses(s, x) == 1  # outputs are uses too
    assert g.outputs == [("out", x)]
    with pytest.raises(CimcError, match="cannot remove %e: still used by %e2"):
        g.remove_node(e)
    assert g.dead_code_elimination() == 3
    assert [n.name for n in g.nodes()] == ["x"]
    with pytest.raises(CimcError, match="cannot remove %x: it is a graph output"):
        g.remove_node(x)


def test_dce_keeps_inputs_and_copy_is_independent() -> None:
    g, x, e, s = small_graph()
    unused = g.add_input("unused", TensorType((1,), F32))
    g.add_node(Exp(), [unused], name="dead")
    clone = g.copy()
    assert g.dead_code_elimination() == 1
    assert [n.name for n in g.input_nodes()] == ["x", "unused"]
    assert "dead" in clone and "dead" not in g
    clone.replace_op("dead", Softmax(0))
    assert isinstance(g.node(x).op, Input) and clone.node("dead").op == Softmax(0)


def test_verify_catches_type_mismatch_after_rewiring() -> None:
    g, x, e, s = small_graph()
    other = g.add_input("other", TensorType((4, 2), F32))
    g.replace_all_uses(x, other)
    with pytest.raises(CimcError) as info:
        g.verify()
    assert str(info.value) == "%e: recorded type f32[2, 4] but its operands give f32[4, 2]"
    g1, x1, e1, s1 = small_graph()
    g1.set_inputs(s1, [e1, g1.add_input("other", TensorType((4, 2), F32))])
    with pytest.raises(CimcError, match=r"^%s: shapes \[2, 4\], \[4, 2\] do not broadcast$"):
        g1.verify()
    g2, x2, e2, s2 = small_graph()
    wide = g2.add_input("wide", TensorType((3, 2, 4), F32))
    g2.set_inputs(s2, [e2, wide])
    with pytest.raises(CimcError, match=r"^%s: recorded type f32\[2, 4\] but its operands give"):
        g2.verify()


def test_verify_catches_arity_and_cycles() -> None:
    g, x, e, s = small_graph()
    g.set_inputs(e, [x, x])
    with pytest.raises(CimcError, match=r"^%e: exp takes 1 operand\(s\), got 2$"):
        g.verify()
    g2, x2, e2, s2 = small_graph()
    g2.set_inputs(e2, [s2])
    with pytest.raises(CimcError, match=r"graph @g has a cycle: %s -> %e -> %s"):
        g2.verify()


def test_verify_requires_outputs_and_constant_weights() -> None:
    g = Graph()
    x = g.add_input("x", TensorType((2, 3), F32))
    with pytest.raises(CimcError, match="graph @main has no outputs; call set_outputs"):
        g.verify()
    w = g.add_constant(np.zeros((3, 3), np.float32), name="w")
    fc = g.add_node(Linear(), [x, w], name="fc")
    g.set_outputs([fc])
    g.verify()
    e = g.add_node(Exp(), [x], name="e")
    g.set_inputs(fc, [x, g.add_node(Reshape((3, 2)), [e])])
    with pytest.raises(
        CimcError, match=r"^%fc: operand 1 \(%reshape\) of linear must be a constant"
    ):
        g.verify()


def test_set_outputs_forms_and_errors() -> None:
    g, x, e, s = small_graph()
    g.set_outputs({"a": e, "b": s})
    assert g.outputs == [("a", e), ("b", s)]
    g.set_outputs([e])
    assert g.outputs == [(e, e)]
    with pytest.raises(CimcError, match="output 'z' refers to undefined value %q"):
        g.set_outputs([("z", "q")])
    with pytest.raises(CimcError, match="output name 'a' is used twice"):
        g.set_outputs([("a", e), ("a", s)])


def test_constants_are_read_only_and_compared_by_content() -> None:
    g = Graph()
    data = np.ones((2, 2), np.float32)
    c = g.add_constant(data, name="c")
    with pytest.raises(ValueError):
        g.node(c).op.value[0, 0] = 5.0
    data[0, 0] = 7.0  # the caller's array is shared, not copied (weights are big)
    assert g.node(c).op.value[0, 0] == 7.0
    assert Input(TensorType((1,), F32)) == Input(TensorType((1,), F32))
    assert Softmax(1) != Softmax(2) and Softmax(1).key() == Softmax(1).key()
