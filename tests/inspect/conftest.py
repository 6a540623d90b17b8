"""Programs the inspect tests look at: the ISA examples and a compiled tiny MLP fixture."""

from __future__ import annotations

from pathlib import Path

import pytest

from cimc.commands.program_files import load_program_and_arch
from cimc.machine.arch import Arch
from cimc.machine.program import Program
from cimc.machine.schedule import Schedule, simulate
from cimc.resources import isa_dir

EXAMPLES = isa_dir() / "examples"
MATMUL = EXAMPLES / "matmul_2core.cimasm"
DOUBLE = EXAMPLES / "double_buffer.cimasm"
SOFTMAX = EXAMPLES / "softmax_rows.cimasm"  # no mload
MLP = Path(__file__).parent / "data" / "mlp.cimasm"  # tests/inspect/make_fixture.py


Loaded = tuple[Program, Arch, Schedule]
_CACHE: dict[Path, Loaded] = {}


def loaded(path: Path) -> Loaded:
    if path not in _CACHE:
        program, arch = load_program_and_arch(str(path), None)
        _CACHE[path] = (program, arch, simulate(program, arch))
    return _CACHE[path]


@pytest.fixture
def mlp() -> Loaded:
    return loaded(MLP)
