"""The malformed-program corpus: each file's first line says the exact error it must give.

`; expect: LINE:COL: MESSAGE` — parsing plus validation against the program's own `.arch`
must raise a CimcError whose text is `FILE:LINE:COL: MESSAGE`; the CLI must print that one
line on stderr and exit 2, without a traceback.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from cimc.errors import CimcError
from cimc.machine.arch import load_arch
from cimc.machine.parser import load_program, parse_program
from cimc.machine.validator import validate

HERE = Path(__file__).parent / "malformed"
CASES = sorted(HERE.glob("*.cimasm"))
REPO = Path(__file__).resolve().parents[2]


def _expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("; expect: "), f"{path.name} lacks its '; expect:' line"
    return first.removeprefix("; expect: ")


def _check(path: Path) -> None:
    program = load_program(path)
    validate(program, load_arch(program.arch_name))


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 25


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_malformed_program_gives_its_message(path: Path) -> None:
    with pytest.raises(CimcError) as info:
        _check(path)
    assert str(info.value) == f"{path}:{_expected(path)}"
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)


def test_fixed_corpus_programs_validate() -> None:
    """Each error is the only one: repairing it (per a hand-made fix) makes the file valid."""
    fixes = {
        "unknown_opcode": ("  mvv", "  mload m0, sp[0x100]:i8[8x8]\n  mvm"),
        "misaligned": ("sp[0x2]", "sp[0x4]"),
        "flash_write": ("dma flash[0x0]", "dma dram[0x0]"),
        "race": ("  halt\n.core 1\n", "  barrier\n  halt\n.core 1\n  barrier\n"),
        "deadlock": (
            "  recv 1, sp[0x0]:i8[4x8], 1\n  send 1, sp[0x0]:i8[4x8], 2\n",
            "  send 1, sp[0x0]:i8[4x8], 2\n  recv 1, sp[0x0]:i8[4x8], 1\n",
        ),
        "unwritten_macro_read": ("m0[0:8,0:4], sp[0x100]:i8[8x4]", "m0, sp[0x100]:i8[8x8]"),
    }
    for stem, (old, new) in fixes.items():
        text = (HERE / f"{stem}.cimasm").read_text()
        assert old in text, stem
        program = parse_program(text.replace(old, new), stem)
        validate(program, load_arch(program.arch_name))


_CLI_CASES = [("run", p) for p in CASES[::4]] + [("report", p) for p in CASES[2::9]]


@pytest.mark.skipif(
    importlib.util.find_spec("cimc.__main__") is None,
    reason="the CLI (cimc/__main__.py) is not there yet",
)
@pytest.mark.parametrize(
    ("command", "path"), _CLI_CASES, ids=[f"{c}-{p.stem}" for c, p in _CLI_CASES]
)
def test_cli_reports_malformed_program_on_one_line(command: str, path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cimc", command, str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0] == f"{path}:{_expected(path)}"
