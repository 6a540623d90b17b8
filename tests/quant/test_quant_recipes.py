"""Recipes vs their float ops, with the error bound each one guarantees stated in the test.

Reference = the float op on the DEQUANTIZED operands (code * scale), so the measured error
is the recipe's own error, not the input quantization's. Bounds are in output steps.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cimc.errors import CimcError
from cimc.quant import constants as qc
from cimc.quant import intops as io
from cimc.quant import plans, recipes, tables


def f64(x: torch.Tensor, scale: float) -> np.ndarray:
    return x.numpy().astype(np.float64) * scale


@pytest.mark.parametrize("out_bits", [8, 16])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_within_half_step(quant, rng, out_bits: int, with_bias: bool) -> None:
    x = rng.normal(0, 1.5, (4, 7, 96))
    w = rng.normal(0, 0.1, (96, 40)).astype(np.float32)
    b = rng.normal(0, 0.5, 40) if with_bias else None
    sx = quant.scale_for(x, 8)
    xq = quant.codes(x, sx, 8)
    wq = qc.quantize_weight_per_channel(w, axis=1)
    ref = f64(xq, sx) @ (wq.codes * wq.scale) + (0 if b is None else b)
    sy = 0.8 * np.abs(ref).max() / qc.qmax(out_bits)  # some outputs saturate
    plan = plans.plan_linear(w, b, sx, sy, out_bits)
    y = recipes.linear(xq, plan)
    ratio = sx * wq.scale / sy
    # REQ rounding 1/2, bias rounding 1/2 * ratio, multiplier error 2^-31 relative
    bound = 0.5 + 0.5 * ratio.max() + np.abs(ref).max() / sy * 2.0**-30
    assert quant.steps(y, sy, ref, out_bits).max() <= bound
    assert int(y.abs().max()) == qc.qmax(out_bits)  # saturation happened and held


def test_linear_accumulator_overflow_is_an_error() -> None:
    w = np.ones((140_000, 2), np.float32)
    with pytest.raises(CimcError, match="int32 accumulator"):
        plans.plan_linear(w, None, 0.1, 0.1, 8, loc="fc_huge")


def test_matmul_run_time_operands(quant, rng) -> None:
    a, b = rng.normal(0, 1, (2, 3, 8, 32)), rng.normal(0, 1, (2, 3, 32, 5))
    sa, sb = quant.scale_for(a, 8), quant.scale_for(b, 8)
    aq, bq = quant.codes(a, sa, 8), quant.codes(b, sb, 8)
    ref = f64(aq, sa) @ f64(bq, sb)
    sy = np.abs(ref).max() / 127
    y = recipes.matmul(aq, bq, plans.plan_matmul(sa, sb, sy, 8, k=32))
    assert quant.steps(y, sy, ref, 8).max() <= 0.5 + 1e-6


@pytest.mark.parametrize("subtract", [False, True])
def test_residual_add_one_rounding(quant, rng, subtract: bool) -> None:
    a = rng.normal(0, 4, (16, 64))  # int16 residual stream
    b = rng.normal(0, 1, (16, 64))  # int8 branch output
    sa, sb = quant.scale_for(a, 16), quant.scale_for(b, 8)
    aq, bq = quant.codes(a, sa, 16), quant.codes(b, sb, 8)
    ref = f64(aq, sa) + (-1 if subtract else 1) * f64(bq, sb)
    sy = 0.9 * np.abs(ref).max() / 32767
    y = recipes.add(aq, bq, plans.plan_add(sa, sb, sy, 16, subtract=subtract))
    # one RSHR: 1/2 step, plus the shared-shift multipliers' error (< 2^-30 relative)
    assert quant.steps(y, sy, ref, 16).max() <= 0.5 + 1e-4


def test_mul_within_half_step(quant, rng) -> None:
    a, b = rng.normal(0, 1, 500), rng.uniform(-1, 1, 500)
    sa, sb = quant.scale_for(a, 8), quant.scale_for(b, 16)
    aq, bq = quant.codes(a, sa, 8), quant.codes(b, sb, 16)
    ref = f64(aq, sa) * f64(bq, sb)
    sy = np.abs(ref).max() / 127
    y = recipes.mul(aq, bq, plans.plan_mul(sa, sb, sy, 8))
    assert quant.steps(y, sy, ref, 8).max() <= 0.5 + 1e-6


UNARY_REFS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"),
    "silu": F.silu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "erf": torch.erf,
    "exp": torch.exp,
}


@pytest.mark.parametrize("name", sorted(UNARY_REFS))
def test_lut8_unary_within_half_step_at_grid_points(quant, name: str) -> None:
    s_in = 6.0 / 127
    x = torch.arange(-128, 128, dtype=torch.int64)
    ref = UNARY_REFS[name](x.to(torch.float64) * s_in).numpy()
    s_out = 0.9 * np.abs(ref).max() / 127
    y = recipes.unary(x, plans.plan_unary(name, s_in, s_out, 8))
    assert quant.steps(y, s_out, ref, 8).max() <= 0.5 + 1e-9


def test_unary_rejects_int16_input() -> None:
    with pytest.raises(ValueError, match="int8"):
        recipes.unary(torch.tensor([300]), plans.plan_unary("gelu", 0.1, 0.1, 8))


@pytest.mark.parametrize("name", ["gelu", "gelu_tanh", "silu"])
def test_ramp_unary_of_int16_is_finer_than_lut8(name: str) -> None:
    """relu part exact, remainder table at span/127: the error is bounded by the table's
    input step times the remainder's slope (<= 0.6), plus half an output step, plus what
    lies outside the span; far below LUT8's error on the same int16 range."""
    ref_fn = {"gelu": F.gelu, "silu": F.silu}.get(name) or (lambda t: F.gelu(t, approximate="tanh"))
    s_in = 24.0 / 32767  # a wide FFN activation: |x| up to 24
    x = torch.arange(-32767, 32768, 7, dtype=torch.int64)
    ref = ref_fn(x.to(torch.float64) * s_in).numpy()
    s_out = np.abs(ref).max() / 32767
    plan = plans.plan_ramp_unary(name, s_in, s_out, 16)
    got = recipes.ramp_unary(x, plan).numpy() * s_out
    span = plans.RAMP_SPAN[name]
    tail = abs(float(ref_fn(torch.tensor(-span, dtype=torch.float64))))
    bound = 0.6 * span / 127 / 2 + s_out / 2 + tail
    assert np.abs(got - ref).max() <= bound
    codes8 = recipes.requant(x, qc.requant_per_tensor(s_in * 32767 / 127 / (24.0 / 127), 8))
    lut8 = recipes.unary(codes8, plans.plan_unary(name, 24.0 / 127, s_out, 16)).numpy() * s_out
    assert np.abs(got - ref).max() < np.abs(lut8 - ref).max() / 5
    with pytest.raises(CimcError, match="no ramp"):
        plans.plan_ramp_unary("tanh", s_in, s_out, 16)


def hf_rotary(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rot * sin


def test_rotary_within_half_step(quant, rng) -> None:
    seq, dim = 24, 16
    x = rng.normal(0, 1, (2, 3, seq, dim))
    inv = 1.0 / (10000.0 ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    ang = np.outer(np.arange(seq, dtype=np.float32), inv)
    ang = np.concatenate([ang, ang], axis=1)
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    sx = quant.scale_for(x, 8)
    xq = quant.codes(x, sx, 8)
    sy = 1.5 * np.abs(x).max() / 127
    plan = plans.plan_rotary(cos, sin, sx, sy, 8)
    y = recipes.rotary(xq, plan)
    q14 = 1.0 / (1 << tables.ROPE_FRAC_BITS)
    ref_q = hf_rotary(f64(xq, sx), plan.cos * q14, plan.sin * q14)
    assert quant.steps(y, sy, ref_q, 8).max() <= 0.5 + 1e-6
    # vs the model's own float tables: plus the Q1.14 rounding, 2^-15 per table entry
    ref = hf_rotary(f64(xq, sx), cos, sin)
    extra = 2 * 128 * sx * 2.0**-15 / sy
    assert quant.steps(y, sy, ref, 8).max() <= 0.5 + extra + 1e-6


def test_embedding_is_a_lookup_of_prequantized_rows(rng) -> None:
    table = rng.normal(0, 1, (50, 8))
    s = np.abs(table).max() / 32767
    plan = plans.plan_embedding(table, s, 16)
    ids = torch.tensor([[3, 0, 49], [3, 3, 7]])
    y = recipes.embedding(ids, plan)
    assert y.shape == (2, 3, 8)
    assert np.array_equal(y.numpy(), qc.quantize_tensor(table, s, 16)[ids.numpy()])
    assert np.abs(y.numpy() * s - table[ids.numpy()]).max() <= s / 2 + 1e-12
    with pytest.raises(CimcError, match="vocabulary"):
        recipes.embedding(torch.tensor([50]), plan)


def test_embedding_plan_rejects_bad_table() -> None:
    with pytest.raises(CimcError, match=r"\[V, D\]"):
        plans.plan_embedding(np.zeros(5), 0.1, 8, loc="wte")


def test_rescale_int16_to_int8(quant, rng) -> None:
    x = rng.normal(0, 3, 1000)
    sx = quant.scale_for(x, 16)
    xq = quant.codes(x, sx, 16)
    sy = 0.5 * np.abs(x).max() / 127  # half the range saturates
    y = recipes.rescale(xq, plans.plan_rescale(sx, sy, 8))
    assert quant.steps(y, sy, f64(xq, sx), 8).max() <= 0.5 + 1e-6
    assert int(y.max()) == 127 and int(y.min()) == -127


@pytest.mark.parametrize("kind", ["sum", "mean", "max"])
def test_reduce(quant, rng, kind: str) -> None:
    x = rng.normal(0, 1, (3, 5, 7))
    sx = quant.scale_for(x, 8)
    xq = quant.codes(x, sx, 8)
    xd = f64(xq, sx)
    ref = xd.max(axis=(0, 2)) if kind == "max" else xd.sum(axis=(0, 2))
    ref = ref / 21 if kind == "mean" else ref
    sy = np.abs(ref).max() / 32767
    y = recipes.reduce(xq, plans.plan_reduce(kind, 21, sx, sy, 16), (0, -1), keepdim=False)
    assert y.shape == (5,)
    assert quant.steps(y, sy, ref, 16).max() <= 0.5 + 1e-4
    with pytest.raises(CimcError, match="reduction"):
        plans.plan_reduce("min", 21, sx, sy, 16)


def test_sqrt_and_callable_tables(quant) -> None:
    x = torch.arange(-128, 128, dtype=torch.int64)
    y = recipes.unary(x, plans.plan_unary("sqrt", 0.01, 1 / 1000, 16))
    assert y[:128].eq(0).all() and int(y[128 + 100]) == 1000  # sqrt(1.0) = 1.0
    cube = plans.plan_unary(lambda v: v**3, 0.01, 1e-6, 16)
    assert int(recipes.unary(torch.tensor([30]), cube)) == 27000


def test_tables_are_pinned_bit_for_bit() -> None:
    """Machine independence: these digests must not change on any platform."""

    def digest(a: np.ndarray) -> str:
        return hashlib.sha256(np.ascontiguousarray(a, dtype="<i8").tobytes()).hexdigest()[:16]

    got = {
        "gelu": digest(tables.lut8_table("gelu", 0.0371, 0.0289, 16)),
        "silu": digest(tables.lut8_table("silu", 0.0371, 0.0289, 8)),
        "exp_hi": digest(tables.exp_tables(0.00113)[0]),
        "exp_lo": digest(tables.exp_tables(0.00113)[1]),
        "rope": digest(tables.rope_tables(32, 8, 10000.0)[1]),
    }
    assert got == PINNED_DIGESTS


# Computed once (mpmath 1.3, 128-bit); every entry is also checked against float elsewhere.
PINNED_DIGESTS = {
    "gelu": "fec2b2cf2b29c9b8",
    "silu": "fba4b8388af1015d",
    "exp_hi": "86487ad9b8d26bc7",
    "exp_lo": "9059d39d953f6987",
    "rope": "3830841dea413768",
}


FLOAT_NAMES = {"float", "float16", "float32", "float64", "double", "bfloat16", "math"}


def _float_uses(path: Path) -> list[tuple[str, int]]:
    """(enclosing function, line) of every float type / math use in a module's code."""
    tree = ast.parse(path.read_text())
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        for node in ast.walk(fn):
            name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
            if name in FLOAT_NAMES:
                found.append((fn.name, node.lineno))
    return found


def test_no_float_on_the_integer_path() -> None:
    """Recipes never touch floats; intops only in imatmul's proven-exact BLAS path."""
    assert _float_uses(Path(recipes.__file__)) == []
    uses = _float_uses(Path(io.__file__))
    assert uses and {fn for fn, _ in uses} == {"imatmul"}
