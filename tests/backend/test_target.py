"""The flat target record read from the arch presets."""

from __future__ import annotations

import pytest

from cimc.backend.plan.target import Target, load_target
from cimc.errors import CimcError
from cimc.machine.arch import load_arch, preset_names


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_flattens(name: str) -> None:
    arch, target = load_arch(name), load_target(name)
    assert target.total_macros == arch.chip.cores * arch.core.macros
    assert (target.rows, target.cols) == (arch.macro.rows, arch.macro.cols)
    assert target.cycles_per_vector == arch.mvm_cycles_per_vector
    assert target.source_bytes_per_cycle("dram") == arch.dram_bytes_per_cycle
    cores = range(arch.chip.cores)
    assert all(target.hops(a, b) == arch.hops(a, b) for a in cores for b in cores)


def test_default_figures() -> None:
    target = load_target("default")
    assert target.source_bytes_per_cycle("dram") == 8.0  # 6.4 GB/s at 800 MHz
    assert target.mvm_cycles(128) == 128 * 8 + 4
    assert target.snake_order() == (0, 1, 3, 2)
    # 1 MiB at 8 B/cycle, latency once; macro writes (1024 bits a cycle each) are faster
    assert target.load_cycles(1 << 20, "dram", 64) == 100 + (1 << 20) // 8
    assert target.load_cycles(0, "flash", 1) == 0


def test_snake_order_visits_neighbours() -> None:
    target = Target("t", 12, (4, 3), 1, 8, 8)
    order = target.snake_order()
    assert sorted(order) == list(range(12))
    assert all(target.hops(a, b) == 1 for a, b in zip(order, order[1:], strict=False))


def test_inconsistent_mesh_is_rejected() -> None:
    with pytest.raises(CimcError, match="mesh product must equal cores"):
        Target("t", 3, (2, 2), 1, 8, 8)
