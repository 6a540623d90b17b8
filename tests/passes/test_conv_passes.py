"""conv-to-matmul and idioms-conv by execution: the float reference gives the same values
before and after, over strides, dilations, asymmetric pads, groups (depthwise included),
1-D and 2-D windows, max and average pooling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cimc.errors import CimcError
from cimc.ir import DType, Graph, TensorType
from cimc.ir.ops import Add, Conv, Im2col, Linear, Mul, Pool
from cimc.passes.conv_to_matmul import ConvToMatmul
from cimc.passes.idioms_conv import ConvIdioms
from cimc.reference.float_model import run_graph

RNG = np.random.default_rng(0)

CONVS = [  # (x shape, cout, kernel, strides, pads, dilations, groups, bias)
    ((1, 3, 9, 9), 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, True),
    ((2, 4, 8, 11), 6, (3, 2), (2, 3), (1, 0, 2, 1), (2, 1), 2, False),
    ((1, 6, 7, 7), 6, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 6, True),  # depthwise
    ((1, 6, 7, 7), 12, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 6, True),  # multiplier 2
    ((1, 8, 5, 5), 4, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, True),  # 1x1: no im2col
    ((1, 8, 5, 5), 4, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1, False),  # 1x1 strided
    ((1, 3, 17), 4, (5,), (2,), (2, 1), (2,), 1, True),  # conv1d
    ((2, 4, 12), 4, (3,), (1,), (1, 1), (1,), 4, False),  # depthwise conv1d
]


def _graph(x_shape: tuple[int, ...], op: object, *consts: np.ndarray) -> Graph:
    g = Graph("t")
    x = g.add_input("x", TensorType(x_shape, DType.F32))
    names = [g.add_constant(c.astype(np.float32)) for c in consts]
    y = g.add_node(op, [x, *names], "y")  # type: ignore[arg-type]
    g.set_outputs([("y", y)])
    return g


def _check(g: Graph, block: int = 128) -> Graph:
    x = RNG.standard_normal(g.node("x").type.shape).astype(np.float32)
    want = run_graph(g, {"x": x})["y"]
    after = g.copy()
    assert ConvToMatmul(block).run(after)
    after.verify()
    assert not any(isinstance(n.op, Conv | Pool) for n in after.nodes())
    got = run_graph(after, {"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    return after


@pytest.mark.parametrize("case", CONVS, ids=lambda c: "x".join(map(str, c[0])) + f"g{c[6]}")
@pytest.mark.parametrize("block", [128, 16])
def test_conv_as_matmul(case: tuple, block: int) -> None:
    shape, cout, kernel, strides, pads, dilations, groups, bias = case
    w = RNG.standard_normal((cout, shape[1] // groups, *kernel))
    consts = [w, RNG.standard_normal(cout)] if bias else [w]
    after = _check(_graph(shape, Conv(strides, pads, dilations, groups), *consts), block)
    linears = [n for n in after.nodes() if isinstance(n.op, Linear)]
    k = w[0].size
    for n in linears:  # block-diagonal: each linear covers whole groups, <= block when > 1
        rows = after.node(n.inputs[1]).type.shape[0]
        assert rows % k == 0 and (rows == k or rows <= block)
    im2col = any(isinstance(n.op, Im2col) for n in after.nodes())
    assert im2col == (kernel != (1,) * len(kernel) or strides != (1,) * len(kernel))


POOLS = [  # (x shape, kind, kernel, strides, pads, dilations, count_include_pad)
    ((1, 3, 9, 9), "max", (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False),
    ((2, 2, 8, 7), "max", (2, 3), (1, 2), (0, 1, 1, 0), (2, 1), False),
    ((1, 3, 9, 9), "avg", (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False),
    ((1, 3, 9, 9), "avg", (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), True),
    ((1, 3, 8, 8), "avg", (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),
    ((1, 4, 16), "max", (3,), (2,), (1, 1), (1,), False),
    ((1, 4, 5, 5), "avg", (5, 5), (1, 1), (0, 0, 0, 0), (1, 1), False),  # global
    ((1, 4, 5, 5), "max", (5, 5), (1, 1), (0, 0, 0, 0), (1, 1), False),  # global
]


@pytest.mark.parametrize("case", POOLS, ids=lambda c: f"{c[1]}{'x'.join(map(str, c[2]))}")
def test_pool_as_reduction(case: tuple) -> None:
    shape, kind, kernel, strides, pads, dilations, include = case
    g = _graph(shape, Pool(kind, kernel, strides, pads, dilations, include))
    x = torch.from_numpy(RNG.standard_normal(shape).astype(np.float32))
    if len(kernel) == 2 and pads[:2] == pads[2:] and dilations == (1, 1) and kind == "avg":
        fn = torch.nn.functional.avg_pool2d
        want = fn(x, kernel, strides, pads[:2], count_include_pad=include)
        got = run_graph(g, {"x": x.numpy()})["y"]
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-6, atol=1e-6)
    _check(g)


def test_window_errors_are_located() -> None:
    with pytest.raises(CimcError, match="groups=4 must divide"):
        _graph((1, 6, 5, 5), Conv(groups=4), RNG.standard_normal((4, 1, 3, 3)))
    with pytest.raises(CimcError, match="does not fit axis"):
        _graph((1, 2, 3, 3), Conv(), RNG.standard_normal((4, 2, 5, 5)))
    with pytest.raises(CimcError, match="covers padding only"):
        _graph((1, 1, 3, 3), Pool("max", (2, 2), (1, 1), (1, 1, 1, 1), (4, 4)))
    with pytest.raises(CimcError, match=r"must be \[B, C, L\] or"):
        _graph((1, 1, 3, 3, 3), Pool("max", (2, 2, 2)))


def test_batch_norm_folds_into_the_conv() -> None:
    g = Graph("bn")
    x = g.add_input("x", TensorType((1, 3, 6, 6), DType.F32))
    w = g.add_constant(RNG.standard_normal((4, 3, 3, 3)).astype(np.float32))
    c = g.add_node(Conv((1, 1), (1, 1, 1, 1)), [x, w], "c")
    s = g.add_constant(RNG.uniform(0.5, 2, (4, 1, 1)).astype(np.float32))
    t = g.add_constant(RNG.uniform(-1, 1, (1, 4, 1, 1)).astype(np.float32))
    y = g.add_node(Add(), [t, g.add_node(Mul(), [c, s], "m")], "y")
    g.set_outputs([("y", y)])
    x_value = RNG.standard_normal((1, 3, 6, 6)).astype(np.float32)
    want = run_graph(g, {"x": x_value})["y"]
    assert ConvIdioms().run(g)
    assert [n.op.NAME for n in g.nodes() if n.op.NAME not in ("input", "constant")] == ["conv"]
    np.testing.assert_allclose(run_graph(g, {"x": x_value})["y"], want, rtol=1e-5, atol=1e-5)
