"""Property tests: random vector instructions on random (strided) views vs a direct model.

The model is plain Python integers on the same values: exact by construction, written
without the interpreter's kernels.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cimc.errors import CimcError
from cimc.machine.arch import load_arch
from cimc.machine.interpreter import run_program
from cimc.machine.parser import parse_program

DTYPES = {"i8": np.int8, "i16": np.int16, "i32": np.int32, "i64": np.int64}
OPS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "max": max,
    "min": min,
}
TINY = load_arch("tiny")


def _program(op: str, dt: tuple[str, str, str], shape: tuple[int, int], bshape: tuple[int, int],
             stride: int) -> str:  # fmt: skip
    rows, cols = shape
    da, db, dd = dt
    a_src = f"{da}[{rows}x{cols}/{stride}]"
    return "\n".join([
        ".arch tiny",
        f".input   a dram[0x0] {da}[{rows}x{stride}]",
        f".input   b dram[0x800] {db}[{bshape[0]}x{bshape[1]}]",
        f".output  y dram[0x1000] {dd}[{rows}x{cols}]",
        "", ".core 0",
        f"  dma sp[0x0]:{da}[{rows}x{stride}], dram[a]:{da}[{rows}x{stride}]",
        f"  dma sp[0x800]:{db}[{bshape[0]}x{bshape[1]}], dram[b]:{db}[{bshape[0]}x{bshape[1]}]",
        f"  {op} sp[0x1000]:{dd}[{rows}x{cols}/{stride}], sp[0x0]:{a_src}, "
        f"sp[0x800]:{db}[{bshape[0]}x{bshape[1]}]",
        f"  dma dram[y]:{dd}[{rows}x{cols}], sp[0x1000]:{dd}[{rows}x{cols}/{stride}]",
        "  halt",
    ]) + "\n"  # fmt: skip


@st.composite
def cases(draw: st.DrawFn) -> tuple:
    op = draw(st.sampled_from(sorted(OPS)))
    rows, cols = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    stride = cols + draw(st.integers(0, 3))
    bshape = draw(st.sampled_from([(rows, cols), (1, cols), (rows, 1), (1, 1)]))
    dt = tuple(draw(st.sampled_from(sorted(DTYPES))) for _ in range(3))
    seed = draw(st.integers(0, 2**32 - 1))
    return op, dt, (rows, cols), bshape, stride, seed


def _random(rng: np.random.Generator, dtype: str, shape: tuple[int, int]) -> np.ndarray:
    info = np.iinfo(DTYPES[dtype])
    # mostly small values (results fit), sometimes extremes (results overflow the dtype)
    hi = int(info.max) if rng.random() < 0.3 else 100
    return rng.integers(max(-hi, int(info.min)), hi, shape, endpoint=True).astype(DTYPES[dtype])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_binary_ops_match_python_integers(case: tuple) -> None:
    op, dt, (rows, cols), bshape, stride, seed = case
    rng = np.random.default_rng(seed)
    a = _random(rng, dt[0], (rows, stride))
    b = _random(rng, dt[1], bshape)
    program = parse_program(_program(op, dt, (rows, cols), bshape, stride), "prop.cimasm")
    want = [
        [OPS[op](int(a[r, c]), int(b[r % bshape[0], c % bshape[1]])) for c in range(cols)]
        for r in range(rows)
    ]
    info = np.iinfo(DTYPES[dt[2]])
    flat = [v for row in want for v in row]
    overflow = any(not -(2**63) <= v < 2**63 for v in flat)
    fits = all(info.min <= v <= info.max for v in flat)
    if overflow or not fits:
        with pytest.raises(CimcError, match="prop.cimasm:9:3: core 0: " + op):
            run_program(program, TINY, {"a": a, "b": b})
        return
    got = run_program(program, TINY, {"a": a, "b": b}).outputs["y"]
    assert got.tolist() == want


def test_strided_store_leaves_gaps_untouched() -> None:
    text = """.arch tiny
.output  y       dram[0x0]       i16[3x4]

.core 0
  fill     sp[0x0]:i16[3x4], 7
  fill     sp[0x0]:i16[3x1/4], -1
  fill     sp[0x4]:i16[2x2/4], 5
  dma      dram[y]:i16[3x4], sp[0x0]:i16[3x4]
  halt
"""
    got = run_program(parse_program(text, "s"), TINY, {}).outputs["y"]
    assert got.tolist() == [[-1, 7, 5, 5], [-1, 7, 5, 5], [-1, 7, 7, 7]]
