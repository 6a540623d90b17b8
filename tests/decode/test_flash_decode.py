"""Issue 22 acceptance: a LLaMA-style decoder whose int8 weights are over 4x the DRAM of
the arch (a TOML with a small `memory.dram_bytes`) compiles, and `cimc generate` on it is
bit-exact at every step with its DRAM footprint within `dram_bytes` and weights read from
flash at every token."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from cimc.cli import main
from cimc.machine.parser import parse_program
from cimc.resources import isa_dir

DRAM = 104 * 1024


def flash_arch(folder: Path) -> Path:
    """`tiny` with 8 macros a core, 64 KiB scratchpads, 104 KiB of DRAM, 2 KiB flash chunks."""
    text = (isa_dir() / "arch" / "tiny.toml").read_text()
    for old, new in (
        ('name = "tiny"', 'name = "tiny-flash"'),
        ("macros = 4", "macros = 8"),
        ("scratchpad_bytes = 16384", "scratchpad_bytes = 65536"),
        ("dram_bytes = 4194304", f"dram_bytes = {DRAM}"),
        ("flash_chunk_bytes = 4096", "flash_chunk_bytes = 2048"),
    ):
        assert old in text
        text = text.replace(old, new)
    path = folder / "tiny-flash.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LLaMA (GQA, RoPE, SiLU MLP), hidden 128, 2 layers: 434,176 bytes of int8 weights."""
    from cimc.zoo import build_model, example_inputs
    from cimc.zoo.export import export_torch

    model = build_model(
        "llama", head="lm", hidden_size=128, intermediate_size=352, num_hidden_layers=2
    )
    path = tmp_path_factory.mktemp("flash") / "llama128.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(export_torch(model, example_inputs(model, seq_len=8)), str(path))
    return path


def test_generate_with_weights_4x_the_dram(
    llama: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = flash_arch(tmp_path)
    out = tmp_path / "out"
    argv = [
        "generate", str(llama), "--prompt-ids", "1,2,3,4,5", "--max-new-tokens", "4",
        "--arch", str(toml), "--no-float", "--json", "--quiet", "-o", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bit_exact"] and [s["mismatched"] for s in report["steps"]] == [0] * 4
    for program in ("prefill", "decode"):
        cost = report["cost"][program]
        assert cost["weight_bytes"] >= 4 * DRAM
        assert cost["dram_capacity_bytes"] == DRAM
        assert 0 < cost["dram_footprint_bytes"] <= DRAM
        assert cost["flash_bytes"] > 0 and cost["dram_bytes"] > 0
        assert cost["flash_bound_ratio"] >= 1.0  # the bound is a lower bound
    decode = parse_program((out / "llama128.decode.cimasm").read_text())
    image = decode.decl("weights.flash")
    assert image is not None and image.space == "flash"
    assert max(d.end for d in decode.decls if d.space == "dram") <= DRAM
