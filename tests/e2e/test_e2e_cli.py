"""Step 3: `cimc compile`, `cimc verify` (--json, exit codes) and `cimc example`."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import cimc.cli as cli
from cimc.machine.parser import load_program
from tests.e2e.e2e_helpers import float_input, mlp

NEW_COMMANDS = ("example", "compile", "verify")


@pytest.fixture(autouse=True)
def commands(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands of this step, registered as cimc/cli.py will list them."""
    missing = tuple(c for c in NEW_COMMANDS if c not in cli.COMMANDS)
    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, *missing))


@pytest.fixture(scope="module")
def onnx_mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "mlp.onnx"
    x = torch.from_numpy(float_input((1, 6, 40)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            mlp((40, 70, 24)), (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"]
        )
    return path


def test_compile_writes_program_and_constants(
    onnx_mlp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "mlp.cimasm"
    code = cli.main(["compile", str(onnx_mlp), "-o", str(out), "--arch", "tiny", "--time-passes"])
    assert code == 0
    assert out.is_file() and out.with_suffix(".safetensors").is_file()
    program = load_program(str(out))
    assert program.arch_name == "tiny" and program.consts_file == "mlp.safetensors"
    captured = capsys.readouterr()
    assert "instructions on 2 cores of 'tiny'" in captured.out
    # the ReLU's output has uneven channels: smoothed (its int16 copy requantized per channel)
    assert "quantized: 2 of 5 values in int16, 1 per-channel requants" in captured.out
    timing = captured.err[captured.err.index("// ----- pass timing") :]  # --time-passes
    assert all(f"  {name}" in timing for name in ("import", "quantize", "lower", "merge-sends"))
    assert code == cli.main(["run", str(out), "--inputs", str(_inputs(tmp_path))])


def test_print_ir_after_all_dumps_every_pass_down_to_the_program(
    onnx_mlp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One dump per pass of the expanded pipeline, graph text first, assembly last: the
    last dump is the program written to disk."""
    out = tmp_path / "mlp.cimasm"
    args = ["compile", str(onnx_mlp), "-o", str(out), "--arch", "tiny", "--print-ir-after-all"]
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    dumps = err.split("// ----- IR after ")[1:]
    names = [d.split()[0].split("{")[0] for d in dumps]
    assert len(dumps) >= 8 and names[-4:] == [
        "lower", "stage-consts", "hoist-const-loads", "merge-sends"
    ]  # fmt: skip
    assert "= q.linear(" in dumps[names.index("quantize")]
    assert "phase 0" in dumps[names.index("map")]
    last = dumps[-1].split("\n", 1)[1]
    written = out.read_text()
    body = [line for line in written.splitlines() if not line.startswith((".consts", ";"))]
    assert all(line in last for line in body[:50]) and ".core 0" in last


def test_list_passes_needs_no_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["compile", "--list-passes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 12 and any(line.startswith("lower{") for line in lines)
    assert cli.main(["compile"]) == 2  # neither a model nor --list-passes


def _inputs(tmp_path: Path) -> Path:
    """Program inputs (codes) for `cimc run`: the .input of the compiled MLP."""
    path = tmp_path / "codes.npz"
    np.savez(path, x=np.ones((6, 40), np.int8))
    return path


def test_verify_json(onnx_mlp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["verify", str(onnx_mlp), "--arch", "tiny", "--json", "--seed", "4"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["bit_exact"] is True and out["mismatched_elements"] == 0
    assert 0.99 < out["cosine_vs_float"] <= 1.0
    assert out["outputs"]["y"]["shape"] == [1, 6, 24]
    assert out["outputs"]["y"]["max_abs_error"] >= 0
    for key in (
        "instructions",
        "makespan_cycles",
        "energy_uj",
        "macro_cell_utilization",
        "weight_bytes_loaded",
        "lower_bound_cycles",
    ):
        assert out[key] > 0, key
    assert out["weight_bytes_loaded"] == 40 * 70 + 70 * 24


def test_verify_per_node_over_a_file_of_samples(
    onnx_mlp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--inputs with a leading sample axis: every sample verified; --per-node rows are
    the computing values, largest drop first, in JSON and as a table of --top rows."""
    samples = tmp_path / "samples.npz"
    np.savez(samples, x=np.stack([float_input((1, 6, 40), seed=k) for k in range(3)]))
    args = ["verify", str(onnx_mlp), "--arch", "tiny", "--inputs", str(samples), "--per-node"]
    assert cli.main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["samples"] == 3 and out["bit_exact"] is True
    nodes = out["nodes"]
    assert len(nodes) == 3 and {n["op"] for n in nodes} == {"linear", "relu"}
    assert [n["drop"] for n in nodes] == sorted((n["drop"] for n in nodes), reverse=True)
    assert all(0.9 < n["cosine"] <= 1.0 and 0.9 < n["own_cosine"] <= 1.0 for n in nodes)
    assert cli.main([*args, "--top", "2"]) == 0
    text = capsys.readouterr().out
    assert "where accuracy goes: 2 of 3 values" in text and "(3 samples)" in text
    assert cli.main([*args, "--top", "0"]) == 2
    assert "--top must be at least 1" in capsys.readouterr().err


def test_verify_with_inputs_file_and_ir_printing(
    onnx_mlp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "in.npz"
    np.savez(inputs, x=float_input((1, 6, 40), seed=9))
    code = cli.main(
        [
            "verify",
            str(onnx_mlp),
            "--arch",
            "default",
            "--inputs",
            str(inputs),
            "--print-ir-after",
            "quantize",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0 and "bit-exact" in captured.out
    assert "// ----- IR after quantize" in captured.err and "q.linear" in captured.err


def test_compile_prints_a_step_of_the_idioms_pass(
    onnx_mlp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The importer returns the translation; the pipeline's idioms pass canonicalizes it,
    one printable step at a time (its first canonicalize, then idioms-linear)."""
    out = tmp_path / "mlp.cimasm"
    argv = ["compile", str(onnx_mlp), "-o", str(out), "--print-ir-after", "canonicalize"]
    assert cli.main([*argv, "--print-ir-after", "idioms-linear"]) == 0
    printed = capsys.readouterr().err.split("// ----- IR after ")[1:]
    first, linear = printed[0], printed[2]  # tidy: canonicalize twice, then idioms-linear
    assert first.startswith("canonicalize{") and linear.startswith("idioms-linear ")
    assert "%y = add(%2.bias, %2.MatMul)" in first  # the export's MatMul + Add
    assert "%y = linear(" in linear and " = add(" not in linear  # the bias folded in


def test_verify_mismatch_exits_1(
    onnx_mlp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A backend fault (the relu table shifted by one) is caught and located."""
    from cimc.backend.lower import table as backend
    from cimc.quant.dialect import QLut

    real = backend.LOWERINGS[QLut]

    def faulty(em, node, op):  # type: ignore[no-untyped-def]
        from dataclasses import replace

        plan = replace(op.plan, table=np.roll(op.plan.table, 1))
        real(em, node, replace(op, plan=plan))

    monkeypatch.setitem(backend.LOWERINGS, QLut, faulty)
    code = cli.main(["verify", str(onnx_mlp), "--arch", "tiny", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["bit_exact"] is False and out["mismatched_elements"] > 0
    relu = out["divergence"]["value"]
    assert relu.startswith("relu") or "Relu" in relu, out["divergence"]


@pytest.mark.parametrize(
    "argv",
    [
        ["compile", "missing.onnx"],
        ["compile", "{model}", "--shape", "x=1,,3"],
        ["compile", "{model}", "-p", "canonicalize"],
        ["compile", "{model}", "--arch", "nosuch"],
        ["compile", "{model}", "--seq-len", "0"],
        ["verify", "{model}", "--inputs", "missing.npz"],
        ["example", "nosuch-model"],
    ],
)
def test_bad_input_exits_2(
    argv: list[str], onnx_mlp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [a.replace("{model}", str(onnx_mlp)) for a in argv]
    assert cli.main([*args, "-o", str(tmp_path)] if args[0] == "example" else args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and "Traceback" not in "".join(err)


@pytest.mark.parametrize("command", NEW_COMMANDS)
def test_help_has_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    assert "example:" in capsys.readouterr().out


@pytest.mark.slow
def test_example_then_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The documented workflow: write bert-tiny as ONNX, verify it with a bound seq len."""
    assert cli.main(["example", "bert-tiny", "-o", str(tmp_path), "--exporter", "legacy"]) == 0
    model = tmp_path / "bert-tiny.onnx"
    assert model.is_file()
    code = cli.main(["verify", str(model), "--arch", "tiny", "--seq-len", "5", "--json"])
    out = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert code == 0 and out["bit_exact"] is True
    assert out["outputs"]["output"]["shape"] == [1, 5, 64]
