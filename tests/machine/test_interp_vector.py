"""Interpreter semantics of the vector-unit instructions, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from cimc.errors import CimcError
from cimc.machine.arch import load_arch
from cimc.machine.interpreter import run_program
from cimc.machine.parser import parse_program

DT = {"i8": np.int8, "i16": np.int16, "i32": np.int32, "i64": np.int64}
NAME_OF = {np.dtype(v): k for k, v in DT.items()}


def run_op(line: str, out: tuple[str, tuple[int, int]], **arrays: np.ndarray) -> np.ndarray:
    """Run one instruction on core 0 of `tiny`.

    `line` names operands `$a`, `$b`... (each array is copied dram -> sp first) and `$y`
    (the destination, copied sp -> dram and returned).
    """
    header, body, sp, dram = [".arch tiny"], [], 0, 0
    views = {}
    for name, arr in arrays.items():
        arr = np.atleast_2d(arr)
        arrays[name] = arr
        dt = NAME_OF[arr.dtype]
        shape = f"{dt}[{arr.shape[0]}x{arr.shape[1]}]"
        header.append(f".input {name} dram[{dram:#x}] {shape}")
        views[name] = f"sp[{sp:#x}]:{shape}"
        body.append(f"  dma {views[name]}, dram[{name}]:{shape}")
        sp += -(-arr.nbytes // 64) * 64
        dram += -(-arr.nbytes // 64) * 64
    dt, (rows, cols) = out
    yshape = f"{dt}[{rows}x{cols}]"
    header.append(f".output y dram[{dram:#x}] {yshape}")
    views["y"] = f"sp[{sp:#x}]:{yshape}"
    for name, view in sorted(views.items(), key=lambda kv: -len(kv[0])):
        line = line.replace(f"${name}", view)
    body += [f"  {line}", f"  dma dram[y]:{yshape}, {views['y']}", "  halt"]
    text = "\n".join(header + ["", ".core 0"] + body) + "\n"
    program = parse_program(text, "t.cimasm")
    return run_program(program, load_arch("tiny"), arrays).outputs["y"]


def i64(values: object) -> np.ndarray:
    return np.atleast_2d(np.array(values, dtype=np.int64))


RNG = np.random.default_rng(7)
A = RNG.integers(-1000, 1000, (3, 5)).astype(np.int32)
ROW = RNG.integers(-50, 50, (1, 5)).astype(np.int32)
COL = RNG.integers(-50, 50, (3, 1)).astype(np.int32)


@pytest.mark.parametrize(
    ("op", "fn"),
    [
        ("add", np.add),
        ("sub", np.subtract),
        ("mul", np.multiply),
        ("max", np.maximum),
        ("min", np.minimum),
    ],
)
def test_binary_broadcasting(op: str, fn: object) -> None:
    for b in (ROW, COL, A[::-1].copy()):
        got = run_op(f"{op} $y, $a, $b", ("i32", (3, 5)), a=A, b=b)
        np.testing.assert_array_equal(got, fn(A.astype(np.int64), b.astype(np.int64)))  # type: ignore[operator]
    got = run_op(f"{op} $y, $a, -7", ("i32", (3, 5)), a=A)
    np.testing.assert_array_equal(got, fn(A.astype(np.int64), -7))  # type: ignore[operator]


def test_result_outside_dtype_is_error() -> None:
    with pytest.raises(CimcError, match=r"result 128 at element \(0, 1\).*i8 range"):
        run_op("add $y, $a, 1", ("i8", (1, 2)), a=np.array([[5, 127]], np.int8))


def test_int64_overflow_is_error() -> None:
    big = np.array([[1 << 62, 3]], np.int64)
    with pytest.raises(CimcError, match="int64 overflow in multiply"):
        run_op("mul $y, $a, 2", ("i64", (1, 2)), a=big)
    with pytest.raises(CimcError, match="int64 overflow in add"):
        run_op("add $y, $a, $a", ("i64", (1, 2)), a=np.array([[1 << 62, 1]], np.int64))
    with pytest.raises(CimcError, match="int64 overflow in sub"):
        run_op("sub $y, $a, 1", ("i64", (1, 1)), a=np.array([[-(1 << 63)]], np.int64))
    with pytest.raises(CimcError, match="int64 overflow in shl"):
        run_op("shl $y, $a, 2", ("i64", (1, 1)), a=np.array([[1 << 62]], np.int64))


def test_rshr_rounds_half_up() -> None:
    x = np.array([[-6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 5, 6]], np.int32)
    # (x + 2) >> 2: ties (-6, -2, 2, 6 are k + 0.5 * 4) round toward +inf
    want = [[-1, -1, -1, -1, 0, 0, 0, 0, 1, 1, 1, 2]]
    np.testing.assert_array_equal(run_op("rshr $y, $a, 2", ("i32", (1, 12)), a=x), want)
    np.testing.assert_array_equal(run_op("rshr $y, $a, 0", ("i32", (1, 12)), a=x), x)
    shifts = np.array([[0, 1, 2, 3, 1, 1, 1, 1, 1, 1, 1, 1]], np.int8)
    got = run_op("rshr $y, $a, $b", ("i32", (1, 12)), a=x, b=shifts)
    want2 = [
        (int(v) + (1 << (s - 1) if s else 0)) >> int(s)
        for v, s in zip(x[0], shifts[0], strict=True)
    ]
    np.testing.assert_array_equal(got, [want2])


def test_shift_amount_view_checked() -> None:
    with pytest.raises(CimcError, match=r"shift amount outside \[0, 63\]"):
        run_op(
            "rshr $y, $a, $b",
            ("i32", (1, 2)),
            a=np.ones((1, 2), np.int32),
            b=np.array([[1, -1]], np.int8),
        )
    np.testing.assert_array_equal(
        run_op("shl $y, $a, 3", ("i32", (1, 2)), a=np.array([[-3, 5]], np.int32)), [[-24, 40]]
    )


def test_req_hand_values() -> None:
    a = np.array([[1000, -1000, 123456, -7, 0]], np.int32)
    m = 1 << 30  # 0.5 in Q31
    got = run_op(f"req $y, $a, {m}, 31, 3, -128, 127", ("i8", (1, 5)), a=a)
    # clamp(rshr(a * 2^30, 31) + 3) = clamp(round_half_up(a / 2) + 3)
    assert got.tolist() == [[127, -128, 127, 0, 3]]
    got = run_op(f"req $y, $a, {m}, 31, 0, -1000, 1000", ("i16", (1, 5)), a=a)
    assert got.tolist() == [[500, -500, 1000, -3, 0]]  # -3.5 rounds up to -3


def test_req_per_channel_views() -> None:
    a = np.array([[100, 100, 100], [-100, -100, -100]], np.int32)
    m = np.array([[1 << 30, 3 << 29, 1 << 30]], np.int32)
    s = np.array([[30], [31]], np.int8)
    zp = np.array([[1, 2, 3]], np.int32)
    got = run_op("req $y, $a, $m, $s, $zp, -120, 120", ("i16", (2, 3)), a=a, m=m, s=s, zp=zp)
    want = [[100 + 1, 120, 100 + 3], [-50 + 1, -75 + 2, -50 + 3]]  # 152 clamps to 120
    assert got.tolist() == want


def test_req_product_overflow_is_error() -> None:
    with pytest.raises(CimcError, match="int64 overflow in multiply"):
        run_op(
            "req $y, $a, 2147483647, 31, 0, -128, 127",
            ("i8", (1, 1)),
            a=np.array([[1 << 40]], np.int64),
        )


def test_div_floor_and_errors() -> None:
    a = np.array([[-7, 7, -8, 0, -1]], np.int32)
    assert run_op("div $y, $a, 2", ("i32", (1, 5)), a=a).tolist() == [[-4, 3, -4, 0, -1]]
    b = np.array([[3, 3, 0, 1, 1]], np.int32)
    with pytest.raises(CimcError, match=r"divisor must be > 0 at element \(0, 2\)"):
        run_op("div $y, $a, $b", ("i32", (1, 5)), a=a, b=b)
    with pytest.raises(CimcError, match="divisor must be > 0"):
        run_op("div $y, $a, $b", ("i32", (1, 5)), a=a, b=-b - 1)
    # a broadcast divisor column: the message indexes the full 2x5 result
    col = np.array([[2], [0]], np.int32)
    with pytest.raises(
        CimcError, match=r"divisor must be > 0 at element \(1, 0\) \(operands 7, 0\)"
    ):
        run_op("div $y, $a, $b", ("i32", (2, 5)), a=np.full((2, 5), 7, np.int32), b=col)


def test_isqrt_exact() -> None:
    big = (1 << 63) - 1
    vals = [0, 1, 2, 3, 4, 15, 16, 17, 10**12 - 1, 10**12, 3037000499**2, 3037000499**2 - 1, big]
    got = run_op("isqrt $y, $a", ("i64", (1, len(vals))), a=np.array([vals], np.int64))
    import math

    assert got.tolist() == [[math.isqrt(v) for v in vals]]
    with pytest.raises(CimcError, match="isqrt of a negative value"):
        run_op("isqrt $y, $a", ("i32", (1, 2)), a=np.array([[4, -1]], np.int32))


def test_lut_and_reductions() -> None:
    table = (np.arange(256, dtype=np.int16) * 3 - 300).reshape(1, 256)
    a = np.array([[-128, -1, 0, 127]], np.int8)
    got = run_op("lut $y, $a, $t", ("i16", (1, 4)), a=a, t=table)
    assert got.tolist() == [[table[0, 0], table[0, 127], table[0, 128], table[0, 255]]]
    x = np.array([[1, -5, 3], [120, 127, 126]], np.int8)
    assert run_op("rsum $y, $a", ("i32", (2, 1)), a=x).tolist() == [[-1], [373]]
    assert run_op("rmax $y, $a", ("i8", (2, 1)), a=x).tolist() == [[3], [127]]
    with pytest.raises(CimcError, match="i8 range"):
        run_op("rsum $y, $a", ("i8", (2, 1)), a=x)


def test_sel_mov_transpose_fill() -> None:
    c = np.array([[0, 1, 0], [5, 0, -1]], np.int8)
    a = np.arange(6, dtype=np.int32).reshape(2, 3)
    got = run_op("sel $y, $c, $a, -9", ("i32", (2, 3)), c=c, a=a)
    assert got.tolist() == [[-9, 1, -9], [3, -9, 5]]
    assert run_op("transpose $y, $a", ("i32", (3, 2)), a=a).tolist() == [[0, 3], [1, 4], [2, 5]]
    assert run_op("mov $y, $a", ("i8", (2, 3)), a=a).tolist() == a.tolist()
    with pytest.raises(CimcError, match="i8 range"):
        run_op("mov $y, $a", ("i8", (1, 2)), a=np.array([[1, 300]], np.int32))
    assert run_op("fill $y, -32768", ("i16", (2, 2))).tolist() == [[-32768] * 2] * 2


def test_in_place_update() -> None:
    a = np.array([[1, 2, 3]], np.int32)
    got = run_op("add $a, $a, $a\n  mov $y, $a", ("i32", (1, 3)), a=a)
    assert got.tolist() == [[2, 4, 6]]


@pytest.mark.parametrize("dst", ["i16", "i32", "i64"])
@pytest.mark.parametrize(
    ("op", "fn"), [("add", np.add), ("sub", np.subtract), ("mul", np.multiply)]
)
def test_narrow_operands_into_a_wider_destination(op: str, fn: object, dst: str) -> None:
    """i8 operands whose result provably fits the destination (one ufunc into it): the
    same values as the int64 computation, broadcast rows, columns and immediates."""
    a = RNG.integers(-128, 128, (3, 5)).astype(np.int8)
    want = fn(a.astype(np.int64), -128)  # type: ignore[operator]
    np.testing.assert_array_equal(run_op(f"{op} $y, $a, -128", (dst, (3, 5)), a=a), want)
    for b in (a[::-1].copy(), a[:1].copy(), a[:, :1].copy()):
        got = run_op(f"{op} $y, $a, $b", (dst, (3, 5)), a=a, b=b)
        np.testing.assert_array_equal(got, fn(a.astype(np.int64), b.astype(np.int64)))  # type: ignore[operator]


def test_wider_destination_overlapping_its_operand_reads_it_first() -> None:
    """mul into an i32 view over the bytes of its own i16 operand: every operand element
    is read before any result is written (isa/SPEC.md)."""
    x = RNG.integers(-30000, 30000, (2, 4)).astype(np.int16)
    text = (
        ".arch tiny\n.input x dram[0x0] i16[2x4]\n.output y dram[0x40] i32[2x4]\n.core 0\n"
        "  dma sp[0x0]:i16[2x4], dram[x]:i16[2x4]\n"
        "  mul sp[0x0]:i32[2x4], sp[0x0]:i16[2x4], sp[0x0]:i16[2x4]\n"
        "  dma dram[y]:i32[2x4], sp[0x0]:i32[2x4]\n  halt\n"
    )
    got = run_program(parse_program(text), load_arch("tiny"), {"x": x}).outputs["y"]
    np.testing.assert_array_equal(got, x.astype(np.int64) ** 2)
