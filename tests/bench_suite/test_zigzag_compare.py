"""benchmarks/zigzag_compare.py: the accelerator zigzag-dse gets is the cimc preset, its
layers are cimc's layers, the hand-written program is exact, and the table comes out."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import zigzag_compare as zc  # noqa: E402

from cimc.machine.arch import arch_from_dict, load_arch, read_arch_toml  # noqa: E402


def differences(mine: Any, theirs: Any, path: str = "") -> dict[str, tuple[Any, Any]]:
    if isinstance(mine, dict) and isinstance(theirs, dict):
        found: dict[str, tuple[Any, Any]] = {}
        for key in sorted(set(mine) | set(theirs)):
            found |= differences(mine.get(key), theirs.get(key), f"{path}.{key}")
        return found
    if isinstance(mine, list) and isinstance(theirs, list) and len(mine) == len(theirs):
        return {k: v for i, (a, b) in enumerate(zip(mine, theirs, strict=True))
                for k, v in differences(a, b, f"{path}[{i}]").items()}  # fmt: skip
    return {} if mine == theirs else {path: (mine, theirs)}


def test_the_zigzag_dimc_preset_gives_zigzags_dimc_yaml_but_what_cimc_cannot_say() -> None:
    zigzag = pytest.importorskip("zigzag")
    yaml = pytest.importorskip("yaml")
    dimc = Path(zigzag.__file__).parent / "inputs" / "hardware" / "dimc.yaml"
    mine = zc.accelerator(load_arch("zigzag-dimc"))
    assert differences(mine, yaml.safe_load(dimc.read_text())) == {
        ".name": ("zigzag-dimc", "dimc"),
        # cimc has one energy per byte for reads and writes; dimc.yaml's SRAM is 32 KiB
        ".memories.sram_256KB.r_cost": (416.0, 416.16),
        ".memories.sram_256KB.w_cost": (416.0, 378.4),
        ".memories.sram_256KB.size": (256 * 1024 * 8, 262144),
        ".memories.dram.w_cost": (700.0, 750),
        ".memories.dram.size": (256 * 2**20 * 8, 10_000_000_000),
    }


def test_macros_become_a_third_dimension_and_cores_are_refused() -> None:
    data = read_arch_toml("zigzag-dimc")
    data["core"]["macros"] = 4
    array = zc.accelerator(arch_from_dict(data))["operational_array"]
    assert (array["dimensions"], array["sizes"]) == (["D1", "D2", "D3"], [128, 128, 4])
    with pytest.raises(SystemExit, match="zigzag-dse models one core, not 4"):
        zc.accelerator(load_arch("default"))


def module_macs(layer: zc.Layer, batch: int) -> int:
    """MACs of the torch module on the layer's input, counted from its weights."""
    import torch

    module, x = layer.module(), layer.example(batch)
    total = 0
    for m in module.modules():
        if isinstance(m, torch.nn.Linear):
            total += batch * m.in_features * m.out_features
        elif isinstance(m, torch.nn.Conv2d):
            total += batch * m.weight.numel() * math.prod(module(x).shape[2:])
    return total


@pytest.mark.parametrize("layer", zc.LAYERS, ids=[la.key for la in zc.LAYERS])
def test_zigzags_layers_are_the_modules_layers(layer: zc.Layer) -> None:
    for batch in (1, 3):
        zz_macs = sum(math.prod(d["loop_sizes"]) for d in layer.zigzag(batch))
        assert zz_macs == module_macs(layer, batch)
    weights = sum(p.numel() for n, p in layer.module().named_parameters() if "bias" not in n)
    assert layer.weights == weights


def test_the_hand_written_program_is_exact() -> None:
    summary = zc.hand(2)  # asserts the outputs against numpy
    assert summary.macs == 2 * 768 * 3072


@pytest.mark.slow
def test_the_table_has_both_tools(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("zigzag")
    assert zc.main(["--layers", "qkv", "--batch", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == zc.HEAD and lines[2].startswith("QKV fused 768->2304")
    figures = lines[2][len("QKV fused 768->2304") :].split()
    assert figures[0] == "1" and float(figures[3]) > 0 and float(figures[6]) > 0  # ratios
