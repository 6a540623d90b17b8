"""Architecture presets: every shipped preset loads; every kind of bad field is rejected."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from cimc.errors import CimcError
from cimc.machine.arch import Arch, arch_from_dict, load_arch, preset_names
from cimc.resources import isa_dir

PRESETS = ["default", "large", "tiny", "zigzag-dimc"]


def _raw(name: str) -> dict:
    return tomllib.loads((isa_dir() / "arch" / f"{name}.toml").read_text())


def test_presets_shipped() -> None:
    assert preset_names() == PRESETS


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads(name: str) -> None:
    arch = load_arch(name)
    assert isinstance(arch, Arch)
    assert arch.name == name
    assert arch.chip.mesh[0] * arch.chip.mesh[1] == arch.chip.cores
    assert arch.source.endswith(f"{name}.toml")


def test_default_values_follow_design() -> None:
    a = load_arch("default")
    assert (a.chip.cores, a.core.macros, a.macro.rows, a.macro.cols) == (4, 16, 128, 128)
    assert a.chip.clock_mhz == 800.0 and a.energy.mac_fj == 100.0
    assert a.mvm_cycles_per_vector == 8
    assert a.dram_bytes_per_cycle == pytest.approx(8.0)  # 6.4 GB/s at 800 MHz
    # 16 macros x 128 x 128 x 2 ops / 8 cycles x 0.8 GHz = 52.4 TOPS per core
    tops = a.core.macros * a.macro_bytes * 2 / a.mvm_cycles_per_vector * a.chip.clock_mhz / 1e6
    assert tops == pytest.approx(52.4288)


def test_large_holds_bert_base_weights() -> None:
    a = load_arch("large")
    tiles_per_layer = 4 * 6 * 6 + 2 * 6 * 24  # 768x768 x4, 768x3072 and 3072x768
    assert a.chip.cores * a.core.macros >= 12 * tiles_per_layer + 36
    assert a.macro.rows == 128


def test_zigzag_preset_matches_dimc_yaml() -> None:
    a = load_arch("zigzag-dimc")
    assert (a.macro.rows, a.macro.cols, a.energy.mac_fj) == (128, 128, 267.0)
    assert a.dram_bytes_per_cycle == pytest.approx(8.0)  # 64 bit/cycle
    assert a.energy.dram_pj_per_byte == pytest.approx(700 / 8)


def test_mesh_hops() -> None:
    a = load_arch("default")  # 2x2 mesh
    assert [a.core_xy(c) for c in range(4)] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert a.hops(0, 3) == 2 and a.hops(1, 2) == 2 and a.hops(2, 2) == 0
    assert [a.memory_hops(c) for c in range(4)] == [1, 2, 2, 3]


def test_load_by_path(tmp_path: Path) -> None:
    text = (isa_dir() / "arch" / "tiny.toml").read_text().replace('"tiny"', '"mine"', 1)
    path = tmp_path / "mine.toml"
    path.write_text(text)
    assert load_arch(str(path)).name == "mine"


def _expect_error(data: dict, *fragments: str) -> None:
    with pytest.raises(CimcError) as info:
        arch_from_dict(data, "arch.toml")
    assert info.value.location == "arch.toml"
    for fragment in fragments:
        assert fragment in info.value.message


@pytest.mark.parametrize(
    ("section", "key", "value", "fragment"),
    [
        ("macro", "rows", -3, "must be > 0"),
        ("macro", "rows", 0, "must be > 0"),
        ("macro", "rows", 1.5, "must be an integer"),
        ("macro", "rows", "128", "must be a number"),
        ("macro", "rows", True, "must be a number"),
        ("chip", "clock_mhz", 0, "must be > 0"),
        ("chip", "clock_mhz", float("inf"), "must be finite"),
        ("chip", "noc_bits_per_cycle", 100, "multiple of 8"),
        ("memory", "flash_chunk_bytes", 3000, "power of two"),
        ("energy", "dram_pj_per_byte", -1, "must be >= 0"),
        ("chip", "mesh", [2], "two integers"),
        ("chip", "mesh", [2, 0], "must be > 0"),
        ("macro", "bits_per_cycle", 3, "must divide"),
        ("macro", "input_bits", 16, "int8"),
    ],
)
def test_bad_field_rejected(section: str, key: str, value: object, fragment: str) -> None:
    data = _raw("default")
    data[section][key] = value
    _expect_error(data, f"'{section}.{key}'", fragment)


def test_unknown_field_rejected() -> None:
    data = _raw("default")
    data["macro"]["colums"] = 128
    _expect_error(data, "unknown field 'macro.colums'")
    data = _raw("default")
    data["macros"] = {}
    _expect_error(data, "unknown field 'macros'")


def test_missing_field_and_section() -> None:
    data = _raw("default")
    del data["energy"]["mac_fj"]
    _expect_error(data, "'energy.mac_fj' is missing")
    data = _raw("default")
    del data["core"]
    _expect_error(data, "[core] is missing")
    data = _raw("default")
    data["name"] = ""
    _expect_error(data, "'name'")


def test_mesh_product_must_equal_cores() -> None:
    data = _raw("default")
    data["chip"]["mesh"] = [4, 2]
    _expect_error(data, "'chip.mesh'", "must equal the core count")


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(CimcError, match="unknown architecture preset 'nope'"):
        load_arch("nope")
    with pytest.raises(CimcError, match="not found"):
        load_arch(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(CimcError) as info:
        load_arch(str(bad))
    assert info.value.location == str(bad) and "invalid TOML" in info.value.message


def test_arch_is_frozen() -> None:
    a = load_arch("tiny")
    with pytest.raises(AttributeError):
        a.chip = a.chip  # type: ignore[misc]
