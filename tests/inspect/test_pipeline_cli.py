"""`--mapping pipeline --stages N` through cimc.cli.main: compile, report and verify name
the pipeline, its stages and micro-batches; a batch of 1 exits 2 in one line; generate
(decode programs: no batch axis to stream) has no pipeline choice and no --stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cimc.cli import main
from tests.differential.zoo_graphs import zoo_onnx

SHAPES = ("--shape", "input_ids=4,16", "--shape", "attention_mask=4,16")
PIPELINE = ("--mapping", "pipeline", "--stages", "2")


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:  # type: ignore[type-arg]
    assert main([*argv, "--json", "-q"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_compile_and_report_name_the_stages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, program = str(zoo_onnx("bert")), str(tmp_path / "x.cimasm")
    compiled = _json(capsys, "compile", model, *SHAPES, *PIPELINE, "-o", program)
    report = _json(capsys, "report", program)
    for doc in (compiled, report):
        assert doc["mapping"] == "pipeline" and doc["micro_batches"] == 4
        assert len(doc["stages"]) == 2 and doc["copies"] == {} and doc["core_groups"] == {}
    assert report["stages"] == compiled["stages"]
    cores = [c for s in report["stages"] for c in s["cores"]]
    assert sorted(cores) == [0, 1, 2, 3]  # default: two stages of two cores each
    assert report["stages"][0]["first"] != report["stages"][1]["first"]
    assert report["run_tokens"] == 64  # [4, 16] token ids
    assert report["tokens_per_cycle"] == pytest.approx(64 / report["makespan_cycles"])
    assert main(["report", program]) == 0
    text = capsys.readouterr().out
    assert "pipeline: 2 stages, 4 micro-batches" in text and "stage 1" in text


def test_verify_runs_the_pipeline_bit_exact(capsys: pytest.CaptureFixture[str]) -> None:
    doc = _json(capsys, "verify", str(zoo_onnx("gpt2")), *SHAPES, *PIPELINE)
    assert doc["bit_exact"] is True and doc["mapping"] == "pipeline"
    assert len(doc["stages"]) == 2 and doc["micro_batches"] == 4


def test_a_batch_of_one_exits_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["compile", str(zoo_onnx("bert")), "--shape", "input_ids=1,8"]
    argv += ["--shape", "attention_mask=1,8", *PIPELINE, "-q", "-o", str(tmp_path / "m.cimasm")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the calibration note
    assert err.startswith("pipeline: pass map failed: batch 1: nothing to pipeline")
    assert not (tmp_path / "m.cimasm").exists()


@pytest.mark.parametrize("extra", [("--mapping", "pipeline"), ("--stages", "2")])
def test_generate_has_no_pipeline(
    extra: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["generate", "model.pt2", "--prompt-ids", "1,2", *extra])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    wanted = "invalid choice: 'pipeline'" if "pipeline" in extra else "unrecognized arguments"
    assert wanted in err


@pytest.mark.parametrize(("flag", "value"), [("--stages", "0"), ("--micro-batches", "1")])
def test_a_pipeline_of_fewer_than_2_is_refused_before_compiling(
    flag: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.cimasm"
    assert main(["compile", str(zoo_onnx("bert")), flag, value, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{flag}: {flag} must be 2 or more (a pipeline), got {value}"]
    assert not out.exists()
