"""The graph interpreter base: dispatch, environment, input checks, located failures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from cimc.errors import CimcError
from cimc.ir import DType, Graph, Node, TensorType
from cimc.ir.interpreter import GraphInterpreter, OpKernel
from cimc.ir.ops import Add, Constant, Exp, Neg

F32 = DType.F32
T24 = TensorType((2, 4), F32)


class NumpyExec(GraphInterpreter[np.ndarray]):
    """A minimal executor: numpy kernels, exact input dtypes, a log of what ran."""

    ENGINE = "the test executor"

    def __init__(self, graph: Graph, kernels: Mapping[type, OpKernel[np.ndarray]]) -> None:
        super().__init__(graph, kernels)
        self.log: list[tuple[str, list[str]]] = []  # (node, values alive before it ran)

    def run_node(
        self, node: Node, env: Mapping[str, np.ndarray], feeds: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        self.log.append((node.name, sorted(env)))
        return super().run_node(node, env, feeds)

    def feed(self, node: Node, array: np.ndarray) -> np.ndarray:
        return array.copy()

    def constant(self, node: Node) -> np.ndarray:
        assert isinstance(node.op, Constant)
        return node.op.value

    def check_value(self, node: Node, value: np.ndarray) -> None:
        if value.dtype != node.type.dtype.numpy:
            raise CimcError(f"gave {value.dtype}", node.where)

    def export(self, node: Node, value: np.ndarray) -> np.ndarray:
        return np.array(value)


KERNELS: dict[type, OpKernel[np.ndarray]] = {
    Exp: lambda op, a: np.exp(a[0]),
    Add: lambda op, a: a[0] + a[1],
}


def chain() -> Graph:
    """x -> e = exp(x) -> s = e + c -> out = s + x, with c a constant."""
    g = Graph("chain")
    x = g.add_input("x", T24)
    e = g.add_node(Exp(), [x], name="e", loc="model.py:3")
    c = g.add_constant(np.full((2, 4), 2.0, np.float32), name="c")
    s = g.add_node(Add(), [e, c], name="s", loc="model.py:4")
    out = g.add_node(Add(), [s, x], name="out")
    g.set_outputs([("y", out)])
    return g


X = np.arange(8, dtype=np.float32).reshape(2, 4) / 8


def test_walks_in_order_dispatching_by_op_and_frees_dead_values() -> None:
    model = NumpyExec(chain(), KERNELS)
    values = model.run_nodes({"x": X}, keep={"e", "out"})
    assert list(values) == ["e", "out"]  # only what was kept, in topological order
    np.testing.assert_allclose(values["e"], np.exp(X))
    np.testing.assert_allclose(values["out"], np.exp(X) + 2.0 + X)
    assert model.outputs_of(values) == {"y": values["out"]}
    assert model.log == [
        ("x", []),
        ("e", ["x"]),
        ("c", ["e", "x"]),
        ("s", ["c", "e", "x"]),
        ("out", ["s", "x"]),  # e and c were freed after s, their last use
    ]


def test_exported_values_are_the_callers_own() -> None:
    model = NumpyExec(chain(), KERNELS)
    values = model.run_nodes({"x": X}, keep={"c"})
    values["c"][:] = 0.0
    assert model.graph.constants()["c"].min() == 2.0


def test_unsupported_op_is_refused_before_running() -> None:
    g = chain()
    g.set_outputs([("y", g.add_node(Neg(), ["out"], name="n", loc="model.py:9"))])
    with pytest.raises(CimcError) as e:
        NumpyExec(g, KERNELS)
    assert str(e.value) == "%n (model.py:9): the test executor has no kernel for op neg"


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"x": X, "z": X}, r"^graph has no input 'z' \(inputs: x\)$"),
        ({}, r"^inputs missing \['x'\]: give every graph input \(x\)$"),
        ({"x": X[0]}, r"^input %x: input is float32\[4\], expected f32\[2, 4\]$"),
        (
            {"x": X.astype(np.float64)},
            r"^input %x: input is float64\[2, 4\], expected f32\[2, 4\]$",
        ),
    ],
)
def test_inputs_are_checked(inputs: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(CimcError, match=message):
        NumpyExec(chain(), KERNELS).run_nodes(inputs, keep=())


class Lenient(NumpyExec):
    """Any integer dtype for integer inputs; missing inputs made up."""

    def accepts(self, given: np.dtype, declared: DType) -> bool:
        return given.kind in "iu" if declared.is_int else given == declared.numpy

    def missing_inputs(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        return {name: np.zeros((3,), np.int8) for name in names}

    def feed(self, node: Node, array: np.ndarray) -> np.ndarray:
        return array.astype(node.type.dtype.numpy)


def int_graph() -> Graph:
    g = Graph("ints")
    a = g.add_input("a", TensorType((3,), DType.I8))
    b = g.add_input("b", TensorType((3,), DType.I8))
    g.set_outputs([("y", g.add_node(Add(), [a, b], name="y"))])
    return g


def test_inputs_given_in_another_dtype_must_fit_the_declared_one() -> None:
    model = Lenient(int_graph(), KERNELS)
    got = model.run_nodes({"a": np.array([1, -2, 127], np.int64)}, keep={"a", "y"})
    assert got["a"].tolist() == [1, -2, 127]  # b was made up by missing_inputs
    with pytest.raises(CimcError, match=r"^input %a: input values do not fit i8$"):
        model.run_nodes({"a": np.array([1, 2, 128], np.int64)}, keep=())
    with pytest.raises(CimcError, match=r"input is float32\[3\], expected i8\[3\]"):
        model.run_nodes({"a": np.ones(3, np.float32)}, keep=())


def failing(error: Exception) -> dict[type, OpKernel[np.ndarray]]:
    def add(op: Any, args: list[np.ndarray]) -> np.ndarray:
        raise error

    return {**KERNELS, Add: add}


def test_bad_data_in_a_kernel_is_a_located_error() -> None:
    with pytest.raises(CimcError) as e:
        NumpyExec(chain(), failing(ValueError("id 9 out of range"))).run_nodes({"x": X}, ())
    assert str(e.value) == "%s (model.py:4): add failed in the test executor: id 9 out of range"


def test_a_kernels_own_location_is_replaced_by_the_node() -> None:
    with pytest.raises(CimcError) as e:
        NumpyExec(chain(), failing(CimcError("no such token", "embedding"))).run_nodes({"x": X}, ())
    assert str(e.value) == "%s (model.py:4): no such token"


def test_a_bug_keeps_its_traceback_and_names_the_node() -> None:
    with pytest.raises(TypeError) as e:
        NumpyExec(chain(), failing(TypeError("unsupported operand"))).run_nodes({"x": X}, ())
    assert e.value.__notes__ == ["while executing %s (model.py:4) (add) in the test executor"]


@pytest.mark.parametrize(
    ("kernel", "message"),
    [
        (lambda op, a: np.exp(a[0]).ravel(), r"the test executor gave shape \[8\], expected f32"),
        (lambda op, a: np.exp(a[0].astype(np.float64)), "gave float64"),
    ],
)
def test_results_are_checked_against_the_node_type(
    kernel: OpKernel[np.ndarray], message: str
) -> None:
    with pytest.raises(CimcError, match=message) as e:
        NumpyExec(chain(), {**KERNELS, Exp: kernel}).run_nodes({"x": X}, ())
    assert e.value.location == "%e (model.py:3)"
