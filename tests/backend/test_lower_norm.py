"""layer_norm / rms_norm lowering against the recipe, bit for bit, on tiny and default."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.lower.norm import lower_norm
from cimc.errors import CimcError
from cimc.quant import recipes
from cimc.quant.plans import plan_norm
from tests.backend.lower_harness import ARCHS, arch, assert_exact, codes, np_dtype, run


@pytest.mark.parametrize("arch_name", ARCHS)
@pytest.mark.parametrize(
    ("rows", "n", "in_bits", "out_bits", "rms"),
    [(7, 96, 8, 8, False), (7, 250, 16, 8, False), (9, 96, 16, 16, True), (5, 250, 8, 8, True)],
)
def test_norm_exact(
    arch_name: str, rows: int, n: int, in_bits: int, out_bits: int, rms: bool
) -> None:
    rng = np.random.default_rng(n + rows + in_bits)
    gamma = rng.normal(1.0, 0.5, n)
    beta = None if rms else rng.normal(0, 0.3, n)
    in_scale = 0.02 if in_bits == 8 else 1e-4
    out_scale = 0.03 if out_bits == 8 else 1e-4
    plan = plan_norm(gamma, beta, 1e-5, in_scale, in_bits, out_scale, out_bits, rms=rms)
    x = codes(rng, (rows, n), in_bits)
    x[0] = x[0, 0]  # a constant row: V = 0, r = 0 -> max(r, 1)
    want = recipes.norm(torch.from_numpy(x), plan)
    b = ProgramBuilder(arch(arch_name))
    xv = b.input("x", f"i{in_bits}", rows, n)  # type: ignore[arg-type]
    y = b.output("y", f"i{out_bits}", rows, n)  # type: ignore[arg-type]
    with b.at("/ln"):
        lower_norm(b, xv, y, plan)
    got = run(b, {"x": x.astype(np_dtype(in_bits))})["y"]
    assert_exact(got, want)
    assert len(np.unique(got)) > 10  # not a degenerate all-clamped output


def test_norm_rejects_wrong_width() -> None:
    plan = plan_norm(np.ones(8), np.zeros(8), 1e-5, 0.1, 8, 0.1, 8)
    b = ProgramBuilder(arch("tiny"))
    x, y = b.input("x", "i8", 2, 6), b.output("y", "i8", 2, 6)
    with pytest.raises(CimcError, match="expects 8 channels, got 6"):
        lower_norm(b, x, y, plan)
