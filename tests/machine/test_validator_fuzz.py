"""Fuzz: every program the validator accepts runs without crashing and schedules.

Random valid programs (tests/machine/strategies.py) with random data either run to the end
or stop with a CimcError (run-time integer errors are legitimate); any other exception, a
deadlock the validator missed, or a nondeterministic result is a bug.
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
from cimc.machine.program import Program
from cimc.machine.schedule import simulate
from cimc.machine.validator import validate
from tests.machine.strategies import programs

ARCH = load_arch("tiny")
_NP = {"i8": np.int8, "i16": np.int16, "i32": np.int32, "i64": np.int64}


def _data(program: Program, seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    arrays: dict[str, dict[str, np.ndarray]] = {"const": {}, "input": {}}
    for d in program.decls:
        if d.kind in arrays and d.dtype is not None:
            info = np.iinfo(_NP[d.dtype])
            lo, hi = max(info.min, -100), min(info.max, 100)
            arrays[d.kind][d.name] = rng.integers(lo, hi, (d.rows, d.cols)).astype(_NP[d.dtype])
    return arrays["input"], arrays["const"]


def _run(program: Program, seed: int) -> dict[str, np.ndarray] | str:
    inputs, consts = _data(program, seed)
    try:
        return run_program(program, ARCH, inputs, consts).outputs
    except CimcError as e:
        assert "deadlock" not in str(e), str(e)  # the validator proved there is none
        return str(e)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(), st.integers(0, 2**31))
def test_valid_programs_run_deterministically_and_schedule(program: Program, seed: int) -> None:
    validate(program, ARCH)
    first, second = _run(program, seed), _run(program, seed)
    if isinstance(first, str):
        assert first == second
    else:
        assert isinstance(second, dict) and first.keys() == second.keys()
        for name in first:
            np.testing.assert_array_equal(first[name], second[name])
    schedule = simulate(program, ARCH)
    assert len(schedule.items) == sum(len(s.instrs) for s in program.cores)
    assert schedule.makespan >= max(item.end for item in schedule.items)


def test_runtime_error_with_a_broadcast_operand_is_a_cimc_error() -> None:
    # Found by the fuzzer: the divisor (1x4, broadcast) is zero because sp starts zeroed.
    text = ".arch tiny\n.core 0\n  div sp[0x0]:i32[4x4], sp[0x40]:i32[4x4], sp[0x100]:i32[1x4]\n"
    program = parse_program(text + "  halt\n", "div.cimasm")
    validate(program, ARCH)
    with pytest.raises(CimcError, match=r"div.cimasm:3:3: .*divisor must be > 0"):
        run_program(program, ARCH, {}, {})
