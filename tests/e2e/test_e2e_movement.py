"""Data movement lowerings (strided dma, scratchpad transpose, broadcast) against the
golden's torch kernels, bit for bit, on integer graphs built directly."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from cimc.backend.builder.compiled import graph_outputs, program_inputs
from cimc.backend.stages.backend import compile_graph
from cimc.errors import CimcError
from cimc.ir.graph import Graph
from cimc.ir.ops import Cast, Concat, Expand, Gather, Reshape, Slice, Transpose
from cimc.ir.types import DType, TensorType
from cimc.machine.interpreter import run_program
from cimc.quant.golden import run_golden
from tests.e2e.e2e_helpers import ARCHS, arch

Build = Callable[[Graph, str], str]


def _check(
    shape: tuple[int, ...], build: Build, arch_name: str, dtype: DType = DType.I16, seed: int = 0
) -> Graph:
    g = Graph("moves")
    x = g.add_input("x", TensorType(shape, dtype), "float")
    g.set_outputs([("y", build(g, x))])
    info = np.iinfo(dtype.numpy)
    data = np.random.default_rng(seed).integers(info.min, info.max, shape, endpoint=True)
    inputs = {"x": data.astype(dtype.numpy)}
    compiled = compile_graph(g, arch(arch_name))
    run = run_program(
        compiled.program, compiled.arch, program_inputs(compiled, inputs), compiled.consts
    )
    got = graph_outputs(compiled, run.outputs)["y"]
    want = run_golden(g, inputs).outputs["y"]
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.array_equal(got, want)
    return g


@pytest.mark.parametrize("arch_name", ARCHS)
@pytest.mark.parametrize("perm", [(0, 2, 1, 3), (2, 0, 1, 3), (0, 1, 3, 2), (3, 1, 0, 2)])
def test_transpose(arch_name: str, perm: tuple[int, ...]) -> None:
    _check((2, 3, 5, 6), lambda g, x: g.add_node(Transpose(perm), [x]), arch_name)


def test_transpose_2d_larger_than_scratchpad_chunks() -> None:
    """A 2-D transpose of 200x48 i16 goes through tiny's 16 KiB scratchpad in chunks."""
    _check((200, 48), lambda g, x: g.add_node(Transpose((1, 0)), [x]), "tiny")


@pytest.mark.parametrize(
    ("axis", "start", "stop", "step"), [(2, 1, 5, 1), (1, 0, 3, 2), (3, 2, 6, 3), (0, 1, 2, 1)]
)
def test_slice(axis: int, start: int, stop: int, step: int) -> None:
    _check((2, 3, 5, 6), lambda g, x: g.add_node(Slice(axis, start, stop, step), [x]), "tiny")


@pytest.mark.parametrize(("axis", "index"), [(1, 2), (3, 0), (0, 1)])
def test_gather(axis: int, index: int) -> None:
    _check((2, 3, 5, 6), lambda g, x: g.add_node(Gather(axis, index), [x]), "tiny")


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_concat_with_reshape_views(axis: int) -> None:
    def build(g: Graph, x: str) -> str:
        flat = g.add_node(Reshape((4, 6, 5)), [x])  # a free re-view
        part = g.add_node(Slice(axis, 0, 2, 1), [flat])
        return g.add_node(Concat(axis), [flat, part, flat])

    _check((4, 30), build, "default")


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ((1, 1, 1, 7), (1, 4, 7, 7)),  # a padding mask expanded over heads and queries
        ((3, 1, 5), (3, 4, 5)),  # a middle axis
        ((3, 1), (3, 9)),  # the last axis
        ((2, 1, 1), (2, 3, 4)),  # the last two
    ],
)
def test_expand(src: tuple[int, ...], dst: tuple[int, ...]) -> None:
    _check(src, lambda g, x: g.add_node(Expand(dst), [x]), "tiny", DType.I8)


def test_cast_to_bool_and_back() -> None:
    def build(g: Graph, x: str) -> str:
        return g.add_node(Cast(DType.I32), [g.add_node(Cast(DType.BOOL), [x])])

    g = _check((3, 40), build, "tiny", DType.I64, seed=2)
    assert g.node("cast").type.dtype is DType.BOOL


def test_output_that_is_an_input_is_copied() -> None:
    """A graph output that is only a re-view of the input still gets its own .output."""
    _check((2, 6), lambda g, x: g.add_node(Reshape((3, 4)), [x]), "tiny")


def test_unsupported_op_is_a_located_error() -> None:
    from cimc.ir.ops import Neg

    g = Graph("bad")
    x = g.add_input("x", TensorType((2, 3), DType.I16), "float")
    g.set_outputs([("y", g.add_node(Neg(), [x], name="plain_neg", loc="model.py:7"))])
    with pytest.raises(CimcError, match="no lowering for neg yet") as err:
        compile_graph(g, arch("tiny"))
    assert "%plain_neg (model.py:7)" in str(err.value)
