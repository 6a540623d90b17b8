"""im2col and q.reduce lowered, run by the interpreter, equal to the golden bit for bit:
column strides taken along rows or columns, padding with zeros or the lowest code, 1-D
windows, several planes over several cores; reductions over trailing axes."""

from __future__ import annotations

import numpy as np
import pytest

from cimc.backend.builder.compiled import graph_outputs, program_inputs
from cimc.backend.stages.backend import compile_graph
from cimc.errors import CimcError
from cimc.ir import DType, Graph, TensorType
from cimc.ir.ops import Im2col
from cimc.machine.interpreter import run_program
from cimc.quant.constants import requant_per_tensor
from cimc.quant.dialect import QReduce
from cimc.quant.golden import run_golden
from cimc.quant.plans import ReducePlan
from tests.backend.lower_harness import arch

RNG = np.random.default_rng(0)


def _run(g: Graph, arch_name: str, x: np.ndarray) -> None:
    compiled = compile_graph(g, arch(arch_name))
    feeds = program_inputs(compiled, {"x": x})
    run = run_program(compiled.program, compiled.arch, feeds, compiled.consts)
    got = graph_outputs(compiled, run.outputs)["y"]
    want = run_golden(g, {"x": x}).outputs["y"]
    np.testing.assert_array_equal(got, want)


def _codes(shape: tuple[int, ...], dtype: DType) -> np.ndarray:
    info = np.iinfo(dtype.numpy)
    return RNG.integers(info.min, info.max + 1, shape).astype(dtype.numpy)


CASES = [  # (x shape, kernel, strides, pads, dilations, pad value)
    ((1, 2, 6, 7), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 0.0),  # stride 1: one dma a tap
    ((2, 3, 9, 6), (3, 2), (2, 3), (1, 0, 2, 1), (2, 1), 0.0),  # column stride, oh > ow
    ((1, 2, 5, 12), (2, 3), (2, 2), (0, 1, 1, 0), (1, 2), -128.0),  # oh <= ow, lowest pad
    ((1, 3, 4, 4), (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 0.0),  # 1x1 strided
    ((2, 3, 13), (4,), (3,), (2, 1), (1,), 0.0),  # conv1d windows
    ((1, 2, 10), (3,), (1,), (1, 1), (2,), -128.0),
]


@pytest.mark.parametrize("arch_name", ["tiny", "default"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[0])))
def test_im2col_bit_exact(case: tuple, arch_name: str) -> None:
    shape, kernel, strides, pads, dilations, value = case
    g = Graph("im2col")
    x = g.add_input("x", TensorType(shape, DType.I8), "token_ids")
    g.set_outputs([("y", g.add_node(Im2col(kernel, strides, pads, dilations, value), [x]))])
    _run(g, arch_name, _codes(shape, DType.I8))


def _reduce_graph(shape: tuple[int, ...], axes: tuple[int, ...], kind: str) -> Graph:
    g = Graph("reduce")
    x = g.add_input("x", TensorType(shape, DType.I16), "token_ids")
    n = int(np.prod([shape[a] for a in axes]))
    plan = ReducePlan(kind, requant_per_tensor(1.0 / (n if kind == "mean" else 1) / 4, 16))
    op = QReduce(scale=0.1, bits=16, axes=axes, keepdim=True, plan=plan)
    g.set_outputs([("y", g.add_node(op, [x]))])
    return g


@pytest.mark.parametrize("kind", ["max", "mean", "sum"])
@pytest.mark.parametrize("axes", [(3,), (2, 3)])
def test_reduce_over_trailing_axes(kind: str, axes: tuple[int, ...]) -> None:
    shape = (2, 3, 4, 5)
    _run(_reduce_graph(shape, axes, kind), "tiny", _codes(shape, DType.I16) // 4)


def test_reduce_over_leading_axes_is_refused() -> None:
    with pytest.raises(CimcError, match="only trailing axes reduce"):
        compile_graph(_reduce_graph((2, 3, 4), (1,), "max"), arch("tiny"))
