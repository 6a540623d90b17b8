"""Area and leakage of a chip (cimc/machine/area.py) and their place in the cost report."""

from __future__ import annotations

import dataclasses

import pytest

from cimc.machine.arch import load_arch
from cimc.machine.area import (
    area_breakdown_mm2,
    chip_area_mm2,
    leakage_breakdown_mw,
    leakage_energy_uj,
    leakage_mw,
)
from cimc.machine.parser import parse_program
from cimc.machine.summary import summarize


def test_default_area_by_hand() -> None:
    a = load_arch("default")  # 4 cores x 16 macros, 256 KiB sp each, 4 MiB gb, 64 lanes
    parts = area_breakdown_mm2(a)
    assert parts["macro_arrays"] == pytest.approx(64 * 0.04)
    assert parts["sram"] == pytest.approx((4 * 0.25 + 4) * 0.35)
    assert parts["vector_units"] == pytest.approx(4 * 64 * 0.0003)
    assert parts["routers"] == pytest.approx(4 * 0.01)
    assert chip_area_mm2(a) == pytest.approx(sum(parts.values()))
    power = leakage_breakdown_mw(a)
    assert power["macro_arrays"] == pytest.approx(64 * 0.05) and power["sram"] == pytest.approx(2.5)
    assert leakage_mw(a) == pytest.approx(3.2 + 2.5 + 4 * 64 * 0.002 + 0.4)


def test_area_grows_with_macros_and_leakage_energy_with_time() -> None:
    a = load_arch("default")
    more = dataclasses.replace(a, core=dataclasses.replace(a.core, macros=32))
    assert chip_area_mm2(more) - chip_area_mm2(a) == pytest.approx(4 * 16 * 0.04)
    # 800 cycles at 800 MHz = 1 us: leakage_mw mW x 1 us = leakage_mw nJ
    assert leakage_energy_uj(a, 800) == pytest.approx(leakage_mw(a) / 1000)
    assert leakage_energy_uj(a, 1600) == pytest.approx(2 * leakage_energy_uj(a, 800))


def test_summary_total_is_dynamic_plus_leakage() -> None:
    text = ".arch tiny\n.core 0\n  halt\n"
    program = parse_program(text, "h.cimasm")
    tiny = load_arch("tiny")
    s = summarize(program, tiny)
    assert s.area_mm2 == pytest.approx(chip_area_mm2(tiny))
    assert s.leakage_energy_uj == pytest.approx(leakage_energy_uj(tiny, s.makespan_cycles))
    assert s.energy_uj == pytest.approx(s.dynamic_energy_uj + s.leakage_energy_uj)
    assert s.energy_breakdown_uj["leakage"] == s.leakage_energy_uj
