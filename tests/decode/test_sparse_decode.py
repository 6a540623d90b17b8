"""`cimc generate --sparsity exact` on an OPT-style ReLU LM (shifted FFN biases: ~90% of
the FFN activations are zero): bit-exact at every step against the unchanged golden, each
decode step priced from the rows it loaded, and fewer weight bytes than dense."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from cimc.cli import main
from cimc.zoo.export import export_torch
from cimc.zoo.relu_lm import relu_lm, zero_share


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lm = relu_lm(hidden=64, layers=2, ffn=256, vocab=128, zero_fraction=0.9)
    ids = torch.arange(8).reshape(1, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = export_torch(lm, (ids, torch.ones_like(ids)), dynamic=True)
    path = tmp_path_factory.mktemp("sparse") / "opt-relu.pt2"
    torch.export.save(exported, str(path))
    return path


def test_shifted_biases_zero_most_activations() -> None:
    lm = relu_lm(hidden=64, layers=2, ffn=256, vocab=128, zero_fraction=0.9)
    shares = zero_share(
        lm, torch.randint(0, 128, (1, 48), generator=torch.Generator().manual_seed(5))
    )
    assert len(shares) == 2 and all(0.8 < s < 0.97 for s in shares)


def _generate(model: Path, sparsity: str, capsys: pytest.CaptureFixture[str]) -> dict:
    argv = [
        "generate", str(model), "--prompt-ids", "3,1,4", "--max-new-tokens", "4",
        "--arch", "tiny", "--sparsity", sparsity, "--json", "--quiet", "--no-float",
    ]  # fmt: skip
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_exact_is_bit_exact_and_loads_fewer_bytes(
    model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dense = _generate(model, "none", capsys)
    sparse = _generate(model, "exact", capsys)
    assert sparse["bit_exact"] and sparse["tokens"] == dense["tokens"]
    decode = [s for s in sparse["steps"] if s["program"] != "prefill"]
    dense_bytes = dense["steps"][1]["cost"]["weight_bytes_loaded"]
    for step in decode:
        active = step["active_fraction"]
        assert len(active) == 2 and all(0.0 < a < 0.3 for a in active.values())
        # the steady state loads the dense bytes minus the inactive down-projection rows
        saved = sum((1 - a) * 256 * 64 for a in active.values())
        assert step["cost"]["weight_bytes_loaded"] == round(dense_bytes - saved)
        assert step["cost"]["weight_bytes_loaded"] <= 0.85 * dense_bytes
        assert step["cost"]["makespan_cycles"] < dense["steps"][1]["cost"]["makespan_cycles"]
    # the summary prices the runs as they ran: the first decode step's rows
    assert (
        sparse["cost"]["decode"]["weight_bytes_loaded"] == decode[0]["cost"]["weight_bytes_loaded"]
    )


def test_table_shows_the_active_share(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "generate", str(model), "--prompt-ids", "3,1", "--max-new-tokens", "2",
        "--arch", "tiny", "--sparsity", "exact", "--quiet", "--no-float",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "active" in out and "bit-exact: every logit" in out


def test_example_opt_relu_tiny_compiles_sparse(tmp_path: Path) -> None:
    from cimc.machine.arch import load_arch
    from cimc.pipeline import PipelineOptions, compile_model
    from cimc.zoo import write_example

    path = write_example("opt-relu-tiny", tmp_path, seq_len=8)
    options = PipelineOptions(seq_len=1, sparsity="exact")
    plan = compile_model(path, load_arch("tiny"), options).compiled.program
    gathered = {i.comment for s in plan.cores for i in s.instrs if i.opcode == "mload.m"}
    assert len(gathered) == 2  # one sparse down-projection per block


def test_window_generate_from_flash_is_bit_exact(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the weights half in flash, --window 2 makes the flash FFN layers sparse: each
    decode step copies only the rows of newly active neurons into the DRAM cache."""
    import tomllib

    from cimc.machine.arch import load_arch

    arch = load_arch("tiny")
    text = Path("isa/arch/tiny.toml").read_text()
    data = tomllib.loads(text)
    small = tmp_path / "tiny-small.toml"
    dram = 96 * 1024  # activations, caches and about half of the 128 KiB weights
    old = f"dram_bytes = {data['memory']['dram_bytes']}"
    small.write_text(text.replace(old, f"dram_bytes = {dram}"))
    assert arch.memory.dram_bytes > dram
    argv = [
        "generate", str(model), "--prompt-ids", "3,1,4", "--max-new-tokens", "6",
        "--arch", str(small), "--sparsity", "exact", "--window", "2", "--json", "--quiet",
        "--no-float", "-o", str(tmp_path / "out"),
    ]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bit_exact"]
    # a batch shares the cache: each run copies the union of its sequences' new neurons
    assert main([*argv[:4], "--prompt-ids", "2,7", *argv[4:-2]]) == 0
    batch = json.loads(capsys.readouterr().out)
    assert len(batch["sequences"]) == 2 and batch["bit_exact"]
    assert all(s["bit_exact"] for s in batch["sequences"])
    decode = [s for s in out["steps"] if s["program"] != "prefill"]
    for step in decode:  # each step copies at most its active rows, from flash
        copied, active = step["window_copied_fraction"], step["active_fraction"]
        assert len(active) == 2 and copied and copied.keys() <= active.keys()
        assert all(copied[k] <= active[k] for k in copied)
    later = sum(sum(s["window_copied_fraction"].values()) for s in decode[1:])
    assert later < sum(sum(s["active_fraction"].values()) for s in decode[1:])
    text = (tmp_path / "out").glob("*.decode.cimasm")
    program = next(text).read_text()
    assert "dma.m" in program and ".rows.cache" in program and ".rows.age" in program


def test_window_without_exact_is_refused(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "generate", str(model), "--prompt-ids", "3,1", "--max-new-tokens", "2",
        "--arch", "tiny", "--window", "2", "--quiet", "--no-float",
    ]  # fmt: skip
    assert main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--window" in err[0] and "--sparsity exact" in err[0]


def test_window_changes_nothing_when_no_layer_is_in_flash(tmp_path: Path) -> None:
    """The window only concerns rows in flash: with every weight in DRAM the program is
    the one of --sparsity exact, byte for byte."""
    from cimc.machine.arch import load_arch
    from cimc.machine.printer import print_program
    from cimc.pipeline import PipelineOptions, compile_model
    from cimc.zoo import write_example

    path = write_example("opt-relu-tiny", tmp_path, seq_len=8)
    texts = [
        print_program(compile_model(path, load_arch("tiny"), options).compiled.program)
        for options in (
            PipelineOptions(seq_len=1, sparsity="exact"),
            PipelineOptions(seq_len=1, sparsity="exact", window=2),
        )
    ]
    assert texts[0] == texts[1] and "dma.m" not in texts[0]
