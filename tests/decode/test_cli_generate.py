"""`cimc generate`: output, exit codes, written programs, one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cimc.cli import main
from cimc.machine.consts_file import load_consts
from cimc.machine.interpreter import run_program
from cimc.machine.parser import parse_program
from cimc.machine.validator import validate
from tests.decode.decode_helpers import arch, tiny_export


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gen") / "tiny.pt2"
    torch.export.save(tiny_export(), str(path))
    return path


def test_generate_json_and_written_programs(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = [
        "generate", str(model), "--prompt-ids", "4,9", "--max-new-tokens", "3",
        "--arch", "tiny", "-o", str(out), "--json", "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bit_exact"] and report["tokens"] == report["golden_tokens"]
    # The weights fit `tiny`: steps after the first keep them in the macros.
    assert [s["program"] for s in report["steps"]] == ["prefill", "decode", "decode-warm"]
    assert report["cost"]["decode-warm"]["weight_bytes_loaded"] == 0
    decode = report["cost"]["decode"]
    assert (
        decode["makespan_cycles"] > 0
        and decode["weight_bytes_loaded"] > 0
        and decode["memory_bound"]
    )
    assert report["capacity"] == 5 and 0.0 <= report["float_agreement"] <= 1.0
    # The written programs parse, validate and share one constants file.
    pre = parse_program((out / "tiny.prefill.cimasm").read_text(), str(out / "tiny.prefill.cimasm"))
    dec = parse_program((out / "tiny.decode.cimasm").read_text(), str(out / "tiny.decode.cimasm"))
    assert pre.consts_file == dec.consts_file == "tiny.safetensors"
    warm_path = out / "tiny.decode-warm.cimasm"
    warm = parse_program(warm_path.read_text(), str(warm_path))
    for program in (dec, warm):
        validate(program, arch("tiny"))
    assert warm.persists == dec.persists and warm.persists
    consts = load_consts(dec)
    feeds = {"input_ids": np.array([[9]]), "cache_position": np.array([[1]])}
    state = {d.name: np.zeros((d.rows, d.cols), np.int8) for d in dec.decls_of("state")}
    run = run_program(dec, arch("tiny"), feeds, consts, state=state)
    assert set(run.state) == set(state) and any(v.any() for v in run.state.values())
    again = run_program(warm, arch("tiny"), feeds, consts, state=state, macros=run.macros)
    np.testing.assert_array_equal(
        again.outputs[dec.decls_of("output")[0].name], run.outputs[dec.decls_of("output")[0].name]
    )


def test_generate_table(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["generate", str(model), "--prompt-ids", "1", "--max-new-tokens", "2", "--no-float"]
    assert main([*argv, "--arch", "tiny", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "bit-exact: every logit of every step equals the integer golden" in out
    assert "decode on 'tiny' per token:" in out and "x the streaming bound" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prompt-ids", "1,x"], "--prompt-ids: '1,x' is not a comma-separated list"),
        (["--prompt-ids", "1,50"], "--prompt-ids: token id 50 is outside the vocabulary 0..49"),
        (["--prompt-ids", "1", "--max-new-tokens", "0"], "--max-new-tokens: must be at least 1"),
        (
            ["--prompt-ids", "1,2", "--max-new-tokens", "4", "--max-positions", "3"],
            "--max-positions: 3 positions cannot hold 2 prompt and 4 new tokens",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2(
    model: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", str(model), "--arch", "tiny", "--quiet", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == message or err[-1].startswith(message), err


def test_missing_model_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "nope.onnx", "--prompt-ids", "1"]) == 2
    assert capsys.readouterr().err.strip() == "nope.onnx: model file not found"


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "cimc generate models/gpt2-tiny.onnx --prompt-ids" in capsys.readouterr().out


def test_generate_batch_json(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "generate", str(model), "--prompt-ids", "4,9,1", "--prompt-ids", "7",
        "--max-new-tokens", "3", "--arch", "tiny", "--json", "--quiet", "--no-float",
        "--attention-block", "2",
    ]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["batch"] == 2 and report["bit_exact"] and "tokens" not in report
    assert [s["prompt"] for s in report["sequences"]] == [[4, 9, 1], [7]]
    for seq in report["sequences"]:
        assert seq["bit_exact"] and seq["tokens"] == seq["golden_tokens"]
    assert [r["windows"] for r in report["runs"]] == [[4, 2], [4, 2], [6, 4]]
    decode = report["cost"]["decode"]
    assert (
        decode["rows"] == 2
        and decode["weight_bytes_per_token"] * 2 == decode["weight_bytes_loaded"]
    )
    assert decode["tokens_per_second"] > 0


def test_generate_batch_table(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["generate", str(model), "--prompt-ids", "1", "--prompt-ids", "2,3", "--no-float"]
    assert main([*argv, "--max-new-tokens", "2", "--arch", "tiny", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "2 sequences" in out and "bit-exact: every logit" in out
    assert "decode on 'tiny' (2 tokens, one run)" in out and "weight bytes," in out
