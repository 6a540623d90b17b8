"""Kernel fast paths: a bound on the operands (a `Span`) may only skip checks that cannot
fire. Every kernel must give the same values, or the same error, whatever span it is told
(the true dtype range, measured, or one so wide that the element-wise checks always run),
and the values must be the exact integer results (Python ints as the reference)."""

from __future__ import annotations

import numpy as np
import pytest

from cimc.errors import CimcError
from cimc.machine import kernels as k
from cimc.machine.arch import load_arch
from cimc.machine.interpreter import run_program
from cimc.machine.parser import parse_program

I64 = np.iinfo(np.int64)
WIDE = (int(I64.min), int(I64.max))  # proves nothing: forces the element-wise checks


def _operands(rng: np.random.Generator, bits: int, shape: tuple[int, ...]) -> np.ndarray:
    hi = 2 ** (bits - 1)
    values = rng.integers(-hi, hi, shape, dtype=np.int64)
    if bits == 64:  # put the extremes in: they are where overflow lives
        values.flat[:2] = (I64.min, I64.max)
    return values


def _outcome(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    try:
        return ("ok", fn(*args, **kwargs))
    except k.KernelError as e:
        return ("error", str(e))


def _same(a, b) -> None:  # type: ignore[no-untyped-def]
    assert a[0] == b[0], (a, b)
    if a[0] == "ok":
        np.testing.assert_array_equal(a[1], b[1])
    else:
        assert a[1] == b[1]


@pytest.mark.parametrize("name", ["add", "sub", "mul", "shl", "rshr", "div"])
@pytest.mark.parametrize("bits", [8, 32, 40, 64])
def test_binary_kernels_agree_whatever_span(name: str, bits: int) -> None:
    rng = np.random.default_rng(bits)
    fn = getattr(k, name)
    for trial in range(30):
        a = _operands(rng, bits, (3, 5))
        if name in ("shl", "rshr"):
            b = rng.integers(-1 if trial % 7 == 0 else 0, 64, (1, 5), dtype=np.int64)
        elif name == "div":
            b = rng.integers(-1 if trial % 5 == 0 else 1, 1000, (3, 1), dtype=np.int64)
        else:
            b = _operands(rng, bits, (3, 5))
        measured = _outcome(fn, a, b)
        checked = _outcome(fn, a, b, WIDE, WIDE)
        _same(measured, checked)
        if measured[0] == "ok" and name in ("add", "sub", "mul"):
            op = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y}
            exact = op[name](a.astype(object), b.astype(object))
            assert (measured[1].astype(object) == exact).all()


def _checked_req(a, m, s, zp, lo: int, hi: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """REQ step by step, every step with its element-wise checks."""
    return np.clip(k.add(k.rshr(k.mul(a, m, WIDE, WIDE), s, WIDE, WIDE), zp, WIDE, WIDE), lo, hi)


def test_req_agrees_with_its_checked_steps() -> None:
    rng = np.random.default_rng(3)
    for bits in (16, 32, 48, 64):
        for _ in range(40):
            a = _operands(rng, bits, (4, 6))
            m = rng.integers(2**30, 2**31, (1, 6), dtype=np.int64)
            s = rng.integers(0, 64, (1, 6), dtype=np.int64)
            zp = np.int64(rng.integers(-5, 5))
            steps = _outcome(_checked_req, a, m, s, zp, -128, 127)
            _same(_outcome(k.req, a, m, s, zp, -128, 127), steps)
            _same(_outcome(k.req, a, m, s, zp, -128, 127, (WIDE,) * 4), steps)
            # as the interpreter bounds an i8 shift row: loose, so the kernel measures it
            i8_shift = (WIDE, WIDE, (-128, 127), (int(zp), int(zp)))
            _same(_outcome(k.req, a, m, s, zp, -128, 127, i8_shift), steps)
            scalar_s = np.asarray(int(s[0, 0]))
            whole = _outcome(_checked_req, a, m, scalar_s, zp, -9, 9)
            _same(_outcome(k.req, a, m, scalar_s, zp, -9, 9), whole)


def test_unary_kernels_agree_whatever_span() -> None:
    rng = np.random.default_rng(5)
    for bits in (8, 16, 64):
        for _ in range(20):
            a = _operands(rng, bits, (4, 7))
            for fn in (k.lut, k.isqrt, k.rsum):
                args = (a, np.arange(256, dtype=np.int64)) if fn is k.lut else (a,)
                _same(_outcome(fn, *args), _outcome(fn, *args, WIDE))
    big = np.full((2, 4), 2**62, np.int64)
    with pytest.raises(k.KernelError, match="int64 overflow in rsum at row 0"):
        k.rsum(big, (2**62, 2**62))


def test_runtime_error_before_a_bad_view_is_reported_first() -> None:
    """Views are checked when first used, not in a pre-pass: an earlier run-time error
    keeps its place in the order of execution."""
    text = (
        ".arch tiny\n.core 0\n"
        "  fill sp[0x0]:i32[1x1], 0\n"
        "  div sp[0x8]:i32[1x1], sp[0x8]:i32[1x1], sp[0x0]:i32[1x1]\n"
        "  fill sp[0x2]:i32[1x1], 0\n"
        "  halt\n"
    )
    with pytest.raises(CimcError, match=r"^p:4:3: core 0: div: divisor must be > 0"):
        run_program(parse_program(text, "p"), load_arch("tiny"), {})
    fixed = text.replace("fill sp[0x0]:i32[1x1], 0", "fill sp[0x0]:i32[1x1], 3")
    with pytest.raises(CimcError, match=r"^p:5:3: core 0: fill: sp\[0x2\] is not aligned"):
        run_program(parse_program(fixed, "p"), load_arch("tiny"), {})


def test_store_range_check_still_fires_after_a_fast_kernel() -> None:
    """mul of two i32 views is proven not to overflow int64, but its result must still fit
    the i32 destination: the store check is not skipped."""
    text = (
        ".arch tiny\n.core 0\n"
        "  fill sp[0x0]:i32[1x2], 70000\n"
        "  mul sp[0x10]:i32[1x2], sp[0x0]:i32[1x2], sp[0x0]:i32[1x2]\n"
        "  halt\n"
    )
    with pytest.raises(CimcError, match=r"result 4900000000 at element \(0, 0\) does not fit"):
        run_program(parse_program(text, "p"), load_arch("tiny"), {})


@pytest.mark.parametrize("shape", [(1, 1), (2, 1), (4, 4), (3, 6), (2, 768)])
def test_measured_span_is_exact_for_few_and_many_elements(shape: tuple[int, int]) -> None:
    # Few elements are measured in Python, many by two reductions: same exact ints.
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    values = _operands(rng, 64, shape)
    want = (min(int(v) for v in values.flat), max(int(v) for v in values.flat))
    assert k.span(values) == want
    assert k.span(values[:, ::-1]) == want  # a strided view
    assert all(isinstance(v, int) for v in k.span(values))


def test_room_in_i32_is_exact_at_both_limits() -> None:
    bound = 32 * k.MAX_INT8_PRODUCT
    acc = np.zeros((2, 3), np.int32)
    assert k.room_in_i32(acc, bound)
    acc[1, 2] = k.I32_MAX - bound
    assert k.room_in_i32(acc, bound)
    acc[1, 2] += 1
    assert not k.room_in_i32(acc, bound)
    acc[1, 2] = k.I32_MIN + bound
    assert k.room_in_i32(acc, bound)
    acc[1, 2] -= 1
    assert not k.room_in_i32(acc, bound)
