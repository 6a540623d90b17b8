"""Masked integer softmax lowering against the recipe, bit for bit, on tiny and default."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.lower.softmax import lower_softmax
from cimc.quant import recipes
from cimc.quant.plans import plan_softmax
from tests.backend.lower_harness import ARCHS, arch, assert_exact, codes, np_dtype, run


@pytest.mark.parametrize("arch_name", ARCHS)
@pytest.mark.parametrize(
    ("rows", "cols", "in_bits", "out_max", "mask_shape"),
    [
        (7, 250, 8, 127, None),
        (7, 250, 16, 32767, "full"),
        (12, 33, 16, 255, "row"),
        (9, 7, 8, 127, "full"),
    ],
)
def test_softmax_exact(
    arch_name: str, rows: int, cols: int, in_bits: int, out_max: int, mask_shape: str | None
) -> None:
    rng = np.random.default_rng(rows * cols + out_max)
    x = codes(rng, (rows, cols), in_bits)
    plan = plan_softmax(0.05 if in_bits == 8 else 3e-4, out_max)
    mask = None
    if mask_shape is not None:
        shape = (rows, cols) if mask_shape == "full" else (1, cols)
        mask = rng.random(shape) < 0.7
        if mask_shape == "full":
            mask[1] = False  # a fully masked row gives zeros
    tm = None if mask is None else torch.from_numpy(mask)
    want = recipes.softmax(torch.from_numpy(x), plan, tm)
    out_bits = 8 if out_max == 127 else 16
    b = ProgramBuilder(arch(arch_name))
    xv = b.input("x", f"i{in_bits}", rows, cols)  # type: ignore[arg-type]
    inputs: dict[str, np.ndarray] = {"x": x.astype(np_dtype(in_bits))}
    mv = None
    if mask is not None:
        mv = b.input("mask", "i8", *mask.shape)
        inputs["mask"] = mask.astype(np.int8)
    y = b.output("y", f"i{out_bits}", rows, cols)  # type: ignore[arg-type]
    with b.at("/softmax"):
        lower_softmax(b, xv, y, plan, mask=mv)
    got = run(b, inputs)["y"]
    assert_exact(got, want)
    assert got.max() > 0
