"""Element-wise lowerings against the recipes, bit for bit, on tiny and default."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.lower.elementwise import (
    lower_add,
    lower_mul,
    lower_reduce,
    lower_rescale,
    lower_unary,
)
from cimc.errors import CimcError
from cimc.machine.program import View
from cimc.quant import recipes
from cimc.quant.plans import plan_add, plan_mul, plan_reduce, plan_rescale, plan_unary
from tests.backend.lower_harness import ARCHS, arch, assert_exact, codes, np_dtype, run

SHAPES = [(7, 250), (40, 96)]  # 40 x 96 int16 rows need two chunks per core on tiny


def _io(b: ProgramBuilder, name: str, x: np.ndarray, bits: int) -> tuple:  # type: ignore[type-arg]
    return b.input(name, f"i{bits}", *x.shape), x.astype(np_dtype(bits))  # type: ignore[arg-type]


@pytest.mark.parametrize("arch_name", ARCHS)
@pytest.mark.parametrize("bshape", ["full", "row", "col", "scalar"])
@pytest.mark.parametrize("subtract", [False, True])
def test_add_sub(arch_name: str, bshape: str, subtract: bool) -> None:
    rng = np.random.default_rng(len(bshape) + subtract)
    r, c = SHAPES[0]
    shape_b = {"full": (r, c), "row": (1, c), "col": (r, 1), "scalar": (1, 1)}[bshape]
    a, bb = codes(rng, (r, c), 16), codes(rng, shape_b, 8)
    plan = plan_add(rng.uniform(0.01, 1), rng.uniform(0.01, 1), rng.uniform(0.05, 2), 8, subtract)
    want = recipes.add(torch.from_numpy(a), torch.from_numpy(bb), plan)
    b = ProgramBuilder(arch(arch_name))
    (av, an), (bv, bn) = _io(b, "a", a, 16), _io(b, "b", bb, 8)
    y = b.output("y", "i8", r, c)
    lower_add(b, av, bv, y, plan)
    assert_exact(run(b, {"a": an, "b": bn})["y"], want)


@pytest.mark.parametrize("arch_name", ARCHS)
def test_mul(arch_name: str) -> None:
    rng = np.random.default_rng(5)
    r, c = SHAPES[1]
    a, bb = codes(rng, (r, c), 16), codes(rng, (1, c), 8)
    plan = plan_mul(0.001, 0.02, 0.01, 16)
    want = recipes.mul(torch.from_numpy(a), torch.from_numpy(bb), plan)
    b = ProgramBuilder(arch(arch_name))
    (av, an), (bv, bn) = _io(b, "a", a, 16), _io(b, "b", bb, 8)
    y = b.output("y", "i16", r, c)
    lower_mul(b, av, bv, y, plan)
    assert_exact(run(b, {"a": an, "b": bn})["y"], want)


@pytest.mark.parametrize("arch_name", ARCHS)
@pytest.mark.parametrize(("in_bits", "out_bits"), [(16, 8), (8, 16), (32, 8)])
def test_rescale(arch_name: str, in_bits: int, out_bits: int) -> None:
    rng = np.random.default_rng(in_bits + out_bits)
    r, c = SHAPES[1]
    x = codes(rng, (r, c), in_bits)
    plan = plan_rescale(rng.uniform(1e-4, 1e-2), rng.uniform(1e-3, 1e-1), out_bits)
    want = recipes.rescale(torch.from_numpy(x), plan)
    b = ProgramBuilder(arch(arch_name))
    xv, xn = _io(b, "x", x, in_bits)
    y = b.output("y", f"i{out_bits}", r, c)  # type: ignore[arg-type]
    lower_rescale(b, xv, y, plan)
    assert_exact(run(b, {"x": xn})["y"], want)


@pytest.mark.parametrize("arch_name", ARCHS)
@pytest.mark.parametrize(("fn", "out_bits"), [("gelu", 8), ("silu", 16), ("exp", 16), ("tanh", 8)])
def test_unary_lut(arch_name: str, fn: str, out_bits: int) -> None:
    rng = np.random.default_rng(len(fn))
    r, c = SHAPES[0]
    x = codes(rng, (r, c), 8)
    plan = plan_unary(fn, 0.05, 0.03 if out_bits == 8 else 0.001, out_bits)
    want = recipes.unary(torch.from_numpy(x), plan)
    b = ProgramBuilder(arch(arch_name))
    xv, xn = _io(b, "x", x, 8)
    y = b.output("y", f"i{out_bits}", r, c)  # type: ignore[arg-type]
    lower_unary(b, xv, y, plan)
    assert_exact(run(b, {"x": xn})["y"], want)


@pytest.mark.parametrize("arch_name", ARCHS)
@pytest.mark.parametrize("kind", ["sum", "mean", "max"])
def test_reduce_last_axis(arch_name: str, kind: str) -> None:
    rng = np.random.default_rng(len(kind))
    r, c = SHAPES[0]
    x = codes(rng, (r, c), 16)
    plan = plan_reduce(kind, c, 0.01, 0.5 if kind != "max" else 0.02, 8)
    want = recipes.reduce(torch.from_numpy(x), plan, (-1,), keepdim=True)
    b = ProgramBuilder(arch(arch_name))
    xv, xn = _io(b, "x", x, 16)
    y = b.output("y", "i8", r, 1)
    lower_reduce(b, xv, y, plan)
    assert_exact(run(b, {"x": xn})["y"], want)


@pytest.mark.parametrize("arch_name", ARCHS)
@pytest.mark.parametrize("kind", ["mean", "max"])
def test_reduce_first_axis(arch_name: str, kind: str) -> None:
    rng = np.random.default_rng(7)
    r, c = 40, 96
    x = codes(rng, (r, c), 16)
    plan = plan_reduce(kind, r, 0.01, 0.02, 8)
    want = recipes.reduce(torch.from_numpy(x), plan, (0,), keepdim=True)
    b = ProgramBuilder(arch(arch_name))
    xv, xn = _io(b, "x", x, 16)
    y = b.output("y", "i8", 1, c)
    lower_reduce(b, xv, y, plan, axis=0)
    assert_exact(run(b, {"x": xn})["y"], want)


def test_wide_rows_are_cut_into_column_blocks() -> None:
    """A 2 x 3000 int16 add needs ~60 KB per row on tiny's 16 KB scratchpads."""
    rng = np.random.default_rng(8)
    a, bb = codes(rng, (2, 3000), 16), codes(rng, (1, 3000), 16)
    plan = plan_add(0.01, 0.02, 0.05, 16)
    want = recipes.add(torch.from_numpy(a), torch.from_numpy(bb), plan)
    b = ProgramBuilder(arch("tiny"))
    (av, an), (bv, bn) = _io(b, "a", a, 16), _io(b, "b", bb, 16)
    y = b.output("y", "i16", 2, 3000)
    lower_add(b, av, bv, y, plan)
    program, _ = b.build()
    dsts = [i.operands[0] for s in program.cores for i in s.instrs if i.opcode == "dma"]
    stores = [v for v in dsts if isinstance(v, View) and v.space == "dram"]
    assert len(stores) > 4 and all(v.cols < 3000 for v in stores)
    assert_exact(run(b, {"a": an, "b": bn})["y"], want)


def test_unary_rejects_int16_input() -> None:
    b = ProgramBuilder(arch("tiny"))
    x, y = b.input("x", "i16", 2, 4), b.output("y", "i8", 2, 4)
    with pytest.raises(CimcError, match="LUT8 input must be i8"):
        lower_unary(b, x, y, plan_unary("gelu", 0.05, 0.03, 8))


def test_add_rejects_bad_broadcast() -> None:
    b = ProgramBuilder(arch("tiny"))
    a, o, y = b.input("a", "i8", 4, 6), b.input("o", "i8", 2, 6), b.output("y", "i8", 4, 6)
    with pytest.raises(CimcError, match="does not broadcast"):
        lower_add(b, a, o, y, plan_add(0.1, 0.1, 0.1, 8))
