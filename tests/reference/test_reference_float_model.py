"""The float executor: outputs, intermediates, default inputs by meaning, located errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from cimc.errors import CimcError
from cimc.ir import DType, Graph, TensorType
from cimc.ir.op_base import Op
from cimc.ir.ops import Cast, Embedding, Exp, Reshape
from cimc.ir.parser import parse_graph
from cimc.reference.float_model import FloatModel, default_inputs, run_graph
from cimc.reference.kernels import KERNELS

ALL_OPS = Path(__file__).parents[1] / "ir" / "data" / "all_ops.ir"


def all_ops_graph() -> Graph:
    return parse_graph(ALL_OPS.read_text(), random_seed=3)


def test_outputs_by_name_and_every_intermediate() -> None:
    graph = all_ops_graph()
    inputs = default_inputs(graph, seed=5)
    outputs = run_graph(graph, inputs)
    assert list(outputs) == ["hidden", "mean", "cat", "max", "sel", "back", "rmin", "scan"]
    values = FloatModel(graph).run_all(inputs)
    assert list(values) == [n.name for n in graph.nodes()]
    for out, node in graph.outputs:
        np.testing.assert_array_equal(outputs[out], values[node])
        assert values[node].dtype == graph.node(node).type.dtype.numpy
    table = graph.node("table").op.value
    np.testing.assert_array_equal(values["emb"], table[inputs["ids"]])
    np.testing.assert_allclose(values["sm"].sum(-1), 1.0, rtol=1e-6)
    assert np.isfinite(outputs["hidden"]).all()


def test_outputs_depend_on_inputs() -> None:
    graph = all_ops_graph()
    a = run_graph(graph, default_inputs(graph, seed=1))
    b = run_graph(graph, default_inputs(graph, seed=2))
    assert not np.allclose(a["hidden"], b["hidden"])


def test_default_inputs_follow_meaning() -> None:
    graph = all_ops_graph()
    inputs = default_inputs(graph, seed=0)
    assert inputs["ids"].dtype == np.int64 and inputs["ids"].shape == (2, 6)
    assert inputs["ids"].min() >= 0 and inputs["ids"].max() < 32  # table has 32 rows
    np.testing.assert_array_equal(inputs["mask"], np.ones((2, 6), np.int64))
    np.testing.assert_array_equal(inputs["pos"], [[0, 1, 2, 3, 4, 5]])
    assert inputs["x"].dtype == np.float32 and inputs["x"].std() > 0.5
    bounded = default_inputs(graph, seed=0, vocab_size=3)
    assert bounded["ids"].max() < 3


def test_vocab_found_through_id_plumbing_or_given() -> None:
    g = Graph()
    ids = g.add_input("ids", TensorType((1, 40), DType.I32), "token_ids")
    flat = g.add_node(Reshape((40,)), [ids])
    wide = g.add_node(Cast(DType.I64), [flat])
    emb = g.add_node(Embedding(), [wide, g.add_constant(np.ones((7, 2), np.float32))])
    g.set_outputs([emb])
    got = default_inputs(g, seed=0)["ids"]
    assert got.dtype == np.int32 and got.max() == 6 and got.min() == 0

    g2 = Graph()
    ids2 = g2.add_input("ids", TensorType((4,), DType.I64), "token_ids")
    g2.set_outputs([g2.add_node(Cast(DType.F32), [ids2])])
    with pytest.raises(CimcError, match="^input %ids: no embedding consumes these token ids"):
        default_inputs(g2)
    assert default_inputs(g2, vocab_size=2)["ids"].max() <= 1


def test_given_inputs_are_checked() -> None:
    graph = all_ops_graph()
    inputs = default_inputs(graph)
    with pytest.raises(
        CimcError, match=r"^input %ids: input is int32\[2, 6\], expected i64\[2, 6\]"
    ):
        run_graph(graph, {**inputs, "ids": inputs["ids"].astype(np.int32)})
    with pytest.raises(CimcError, match=r"graph has no input 'idz' \(inputs: ids, mask, pos, x\)"):
        run_graph(graph, {"idz": inputs["ids"]})
    # Missing inputs are generated; the ones given are used as is.
    partial = run_graph(graph, {"x": inputs["x"]})
    assert partial["hidden"].shape == (2, 6, 16)


def test_kernel_failure_is_located_at_the_node() -> None:
    graph = all_ops_graph()
    inputs = default_inputs(graph)
    inputs["ids"][0, 0] = 99
    with pytest.raises(CimcError) as info:
        run_graph(graph, inputs)
    assert str(info.value).startswith("%emb (model.embed_tokens): embedding failed")
    assert "token id 99 is outside the embedding table [0, 32)" in str(info.value)


@dataclass(frozen=True)
class Mystery(Op):
    """An op with a type rule but no float kernel (not registered on purpose)."""

    NAME = "mystery"
    MIN_INPUTS = MAX_INPUTS = 1

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        return inputs[0]


def test_op_without_kernel_is_a_located_error() -> None:
    g = Graph()
    x = g.add_input("x", TensorType((2,), DType.F32))
    e = g.add_node(Exp(), [x])
    m = g.add_node(Mystery(), [e], name="m", loc="model.py:12")
    g.set_outputs([m])
    with pytest.raises(CimcError) as info:
        FloatModel(g)
    assert str(info.value) == "%m (model.py:12): the float reference has no kernel for op mystery"


def test_run_all_subset_and_results_do_not_alias_weights() -> None:
    graph = all_ops_graph()
    inputs = default_inputs(graph)
    model = FloatModel(graph)
    some = model.run_all(inputs, names=["table", "emb", "q"])
    assert list(some) == ["table", "emb", "q"]
    np.testing.assert_array_equal(some["q"], model.run_all(inputs)["q"])
    some["table"][:] = 0.0  # editing a result must not change the graph's weights
    assert np.abs(graph.node("table").op.value).sum() > 0
    with pytest.raises(CimcError, match="no value %nope in graph @all_ops"):
        model.run_all(inputs, names=["nope"])


def test_a_kernel_result_of_the_wrong_dtype_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    graph = all_ops_graph()
    exp = next(n for n in graph.nodes() if isinstance(n.op, Exp))
    monkeypatch.setitem(KERNELS, Exp, lambda op, a: torch.exp(a[0].double()))
    with pytest.raises(CimcError) as info:
        run_graph(graph, default_inputs(graph))
    assert str(info.value) == (
        f"{exp.where}: the float reference gave torch.float64, expected {exp.type}"
    )
