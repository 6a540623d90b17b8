"""SPACE.toml parsing: what a good space holds, and one located line for every bad one."""
# ruff: noqa: E501  (the bad-space table: one case per line reads better than wrapped)

from __future__ import annotations

from pathlib import Path

import pytest

from cimc.errors import CimcError
from cimc.machine.arch import arch_from_dict
from cimc.sweep.space import load_space
from cimc.sweep.trial import arch_data

GOOD = """\
base = "tiny"
[compile]
seq_len = 8
[knobs]
"core.macros" = [2, 4, 8]
"memory.dram_gbps" = {low = 3.2, high = 25.6, log = true}
"chip.mesh" = ["2x1", "1x2", "2x2"]
"compile.streaming" = ["auto", "sequential"]
"""


def _space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.toml"
    path.write_text(text)
    return path


def test_good_space(tmp_path: Path) -> None:
    space = load_space(_space(tmp_path, GOOD))
    assert space.base == "tiny" and space.compile == {"seq_len": 8}
    names = [k.name for k in space.knobs]
    assert names == ["core.macros", "memory.dram_gbps", "chip.mesh", "compile.streaming"]
    macros, dram = space.knobs[0], space.knobs[1]
    assert macros.values == (2, 4, 8) and macros.type is int
    assert not dram.finite and (dram.low, dram.high, dram.log) == (3.2, 25.6, True)
    assert space.grid is None  # a range knob: not a grid
    grid = load_space(_space(tmp_path, GOOD.replace('"memory.dram_gbps"', "# ")))
    assert grid.grid_size == 3 * 3 * 2
    assert grid.fingerprint() != space.fingerprint()


def test_mesh_knob_sets_cores_and_values_land_in_the_arch(tmp_path: Path) -> None:
    space = load_space(_space(tmp_path, GOOD))
    params = {"core.macros": 8, "chip.mesh": "2x2", "memory.dram_gbps": 12.8}
    arch = arch_from_dict(arch_data(space.base_arch, params), "trial")
    assert (arch.chip.cores, arch.chip.mesh, arch.core.macros) == (4, (2, 2), 8)
    assert arch.memory.dram_gbps == 12.8
    assert space.base_arch["chip"]["cores"] == 2  # the base is not edited in place


def test_base_relative_to_the_space_file(tmp_path: Path) -> None:
    from cimc.resources import isa_dir

    (tmp_path / "mine.toml").write_text((isa_dir() / "arch" / "tiny.toml").read_text())
    space = load_space(_space(tmp_path, 'base = "mine.toml"\n[knobs]\n"core.macros" = [2]\n'))
    assert space.base == str(tmp_path / "mine.toml") and space.base_arch["name"] == "tiny"


KNOBS = '\nbase = "tiny"\n[knobs]\n'
BAD = [
    ("unknown-knob", KNOBS + '"core.macro" = [1]', r"unknown knob 'core.macro'; expected an arch field"),
    ("unknown-compile", KNOBS + '"compile.opt" = [1]', r"unknown knob 'compile.opt'; compiler knobs: compile.seq_len, compile.streaming, compile.mapping"),
    ("empty-list", KNOBS + '"core.macros" = []', r"knob 'core.macros': an empty list of values"),
    ("twice", KNOBS + '"core.macros" = [2, 2]', r"knob 'core.macros': a value is listed twice"),
    ("float-for-int", KNOBS + '"core.macros" = [2.5]', r"knob 'core.macros': expected an integer, got 2.5"),
    ("string-number", KNOBS + '"chip.clock_mhz" = ["fast"]', r"knob 'chip.clock_mhz': expected a number, got 'fast'"),
    ("low-high", KNOBS + '"chip.clock_mhz" = {low = 900, high = 800}', r"knob 'chip.clock_mhz': low \(900.0\) must be below high \(800.0\)"),
    ("log-zero", KNOBS + '"core.dma_setup_cycles" = {low = 0, high = 8, log = true}', r"a log range needs low > 0, got 0"),
    ("range-keys", KNOBS + '"core.macros" = {low = 1, top = 8}', r"knob 'core.macros': a range is \{low = \.\., high = \.\., log = \.\.\}"),
    ("scalar", KNOBS + '"core.macros" = 8', r"knob 'core.macros': expected a list of values or a range"),
    ("policy", KNOBS + '"compile.streaming" = ["fast"]', r"'fast' is not one of auto, sequential, double-buffer, pin-what-fits"),
    ("mesh", KNOBS + '"chip.mesh" = [[2, 2]]', r"a mesh is written \"XxY\""),
    ("no-knobs", 'base = "tiny"\n', r"no \[knobs\] table: name at least one knob to vary"),
    ("no-base", '[knobs]\n"core.macros" = [2]\n', r"'base' must name an arch preset or a TOML file"),
    ("bad-preset", 'base = "huge"\n[knobs]\n"core.macros" = [2]\n', r"'base': unknown architecture preset 'huge'; presets: default"),
    ("missing-base-file", 'base = "nope.toml"\n[knobs]\n"core.macros" = [2]\n', r"base arch file 'nope.toml' not found"),
    ("top-key", KNOBS.replace("[knobs]", "trials = 3\n[knobs]") + '"core.macros" = [2]', r"unknown key 'trials'; expected base, \[compile\], \[knobs\]"),
    ("compile-option", 'base = "tiny"\n[compile]\nopt = 1\n[knobs]\n"core.macros" = [2]\n', r"unknown compiler option 'compile.opt'"),
    ("not-toml", "base = \n", r"invalid TOML"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_space_is_one_located_line(tmp_path: Path, text: str, message: str) -> None:
    path = _space(tmp_path, text)
    with pytest.raises(CimcError, match=message) as raised:
        load_space(path)
    assert str(raised.value).startswith(f"{path}: ") and "\n" not in str(raised.value)


def test_missing_space_file(tmp_path: Path) -> None:
    with pytest.raises(CimcError, match="space file not found"):
        load_space(tmp_path / "none.toml")
