"""`cimc run` and `cimc report` through the real command line (`python -m cimc`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cimc.machine.arch import load_arch
from cimc.machine.interpreter import run_program
from cimc.machine.parser import load_program
from cimc.resources import isa_dir

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = isa_dir() / "examples"
MATMUL = str(EXAMPLES / "matmul_2core.cimasm")
MATMUL_IN = str(EXAMPLES / "matmul_2core.inputs.npz")


def cimc(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cimc", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_run_writes_outputs_and_trace(tmp_path: Path) -> None:
    out, trace = tmp_path / "y.npz", tmp_path / "t.json"
    done = cimc("run", MATMUL, "--inputs", MATMUL_IN, "-o", str(out), "--trace", str(trace))
    assert done.returncode == 0, done.stderr
    assert "outputs" in done.stdout and "int8" in done.stdout
    program = load_program(MATMUL)
    inputs = dict(np.load(MATMUL_IN))
    want = run_program(program, load_arch("tiny"), inputs).outputs["y"]
    with np.load(out) as got:
        assert got.files == ["y"]
        np.testing.assert_array_equal(got["y"], want)
    events = json.loads(trace.read_text())["traceEvents"]
    complete = [e for e in events if e["ph"] == "X" and e["pid"] in (0, 1)]
    assert len(complete) == sum(len(s.instrs) for s in program.cores)


def test_report_json_and_tables(tmp_path: Path) -> None:
    trace = tmp_path / "s.json"
    done = cimc("report", str(EXAMPLES / "double_buffer.cimasm"), "--json", "--trace", str(trace))
    assert done.returncode == 0, done.stderr
    events = json.loads(trace.read_text())["traceEvents"]
    assert sum(e["ph"] == "X" and e["pid"] == 0 for e in events) == 16
    report = json.loads(done.stdout)
    assert report["arch"] == "tiny" and report["macs"] == 32 * 128 * 32
    assert report["makespan_cycles"] >= report["lower_bound_cycles"] > 0
    total = sum(report["energy_breakdown_uj"].values())
    assert report["command"] == "report" and report["energy_uj"] == pytest.approx(total)
    assert set(report["energy_breakdown_uj"]) == {
        "mac", "weight_write", "scratchpad", "global_buffer", "noc", "dram", "flash", "vector",
        "leakage",
    }  # fmt: skip
    leak = report["leakage_mw"] * report["time_us"] / 1000  # mW x us = nJ
    assert report["leakage_energy_uj"] == pytest.approx(leak) and leak > 0
    assert report["energy_uj"] == pytest.approx(report["dynamic_energy_uj"] + leak)
    assert report["area_mm2"] == pytest.approx(sum(report["area_breakdown_mm2"].values()))
    assert report["opcode_counts"]["mvm.acc"] == 3
    tables = cimc("report", MATMUL)
    assert tables.returncode == 0, tables.stderr
    for heading in ("energy breakdown", "unit utilization", "instructions by opcode", "'tiny'",
                    "dynamic +", "leakage (", "mm2 (macro_arrays"):  # fmt: skip
        assert heading in tables.stdout


def test_arch_file_changes_the_estimate(tmp_path: Path) -> None:
    """A TOML copy of the preset with a slower DRAM: same program, more cycles."""
    slow = tmp_path / "slow.toml"
    text = (isa_dir() / "arch" / "tiny.toml").read_text()
    slow.write_text(text.replace("dram_gbps = 6.4", "dram_gbps = 0.8"))
    base = json.loads(cimc("report", MATMUL, "--json").stdout)
    done = cimc("report", MATMUL, "--json", "--arch", str(slow))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["makespan_cycles"] > base["makespan_cycles"]
    other = _one_line_error(cimc("report", MATMUL, "--arch", "default"))
    assert other.startswith(f"{MATMUL}:1:1: program was compiled for arch 'tiny'")


@pytest.mark.parametrize("command", ["run", "report"])
def test_help_has_an_example(command: str) -> None:
    done = cimc(command, "--help")
    assert done.returncode == 0
    assert "example" in done.stdout and f"cimc {command} " in done.stdout


def _one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_error_missing_program() -> None:
    line = _one_line_error(cimc("run", "nope.cimasm"))
    assert line.startswith("nope.cimasm: cannot read the program")


def test_error_syntax_has_file_line_col(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cimasm"
    bad.write_text(".arch tiny\n\n.core 0\n  frobnicate sp[0x0]:i8[1x1]\n  halt\n")
    line = _one_line_error(cimc("report", str(bad)))
    assert line.startswith(f"{bad}:4:3: ")


def test_error_runtime_names_instruction(tmp_path: Path) -> None:
    prog = tmp_path / "div.cimasm"
    prog.write_text(
        ".arch tiny\n.output y dram[0x0] i32[1x2]\n\n.core 0\n"
        "  fill     sp[0x0]:i32[1x2], 0\n"
        "  div      sp[0x8]:i32[1x2], sp[0x0]:i32[1x2], sp[0x0]:i32[1x2]\n"
        "  halt\n"
    )
    line = _one_line_error(cimc("run", str(prog)))
    assert line.startswith(f"{prog}:6:3: core 0: div: divisor must be > 0")


def test_error_bad_inputs(tmp_path: Path) -> None:
    garbage = tmp_path / "x.npz"
    garbage.write_bytes(b"not a zip")
    assert "cannot read the inputs" in _one_line_error(
        cimc("run", MATMUL, "--inputs", str(garbage))
    )
    pickled = tmp_path / "p.npz"
    np.savez(pickled, x=np.array([{"a": 1}], dtype=object))
    line = _one_line_error(cimc("run", MATMUL, "--inputs", str(pickled)))
    assert line.startswith(f"{pickled}: cannot read the inputs")
    wrong = tmp_path / "w.npz"
    np.savez(wrong, x=np.zeros((8, 64), np.float32))
    line = _one_line_error(cimc("run", MATMUL, "--inputs", str(wrong)))
    assert "input 'x' has dtype float32" in line and line.startswith(MATMUL)


def test_error_unknown_arch() -> None:
    line = _one_line_error(cimc("report", MATMUL, "--arch", "huge"))
    assert "unknown architecture preset 'huge'" in line and "default" in line
