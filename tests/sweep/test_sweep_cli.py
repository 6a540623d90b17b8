"""`cimc sweep` end to end on the tiny one-block encoder of examples/models: the study in
SQLite, the CSV, the plots, failed trials, resuming, process workers and Ray."""
# ruff: noqa: E501  (the bad-option table: one case per line)

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

optuna = pytest.importorskip("optuna")

from cimc.cli import main  # noqa: E402
from cimc.errors import CimcError  # noqa: E402
from cimc.sweep.study import STUDY_NAME  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODEL = str(ROOT / "examples" / "models" / "tiny_encoder.onnx")
GRID = """\
base = "tiny"
[knobs]
"core.macros" = [2, 4, 8]
"compile.streaming" = ["auto", "sequential", "double-buffer"]
"""


def sweep(
    tmp_path: Path, space: str, *args: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any]]:
    path = tmp_path / "space.toml"
    path.write_text(space)
    code = main(
        ["sweep", MODEL, "--space", str(path), "-o", str(tmp_path / "out"), "--json", *args]
    )
    captured = capsys.readouterr()
    assert captured.out, captured.err
    return code, json.loads(captured.out)


def csv_rows(out: Path) -> list[dict[str, str]]:
    with (out / "trials.csv").open() as f:
        return list(csv.DictReader(f))


def load(out: Path) -> Any:
    return optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{out / 'study.db'}")


def table(
    rows: list[dict[str, str]], knobs: tuple[str, ...]
) -> dict[tuple[str, ...], tuple[str, ...]]:
    """knob values -> figures, whatever the trial numbers."""
    figures = ("state", "makespan_cycles", "energy_uj", "area_mm2", "weight_bytes_loaded", "error")
    return {tuple(r[k] for k in knobs): tuple(r[f] for f in figures) for r in rows}


def test_grid_with_two_workers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = sweep(tmp_path, GRID, "--workers", "2", "--verify", capsys=capsys)
    assert code == 0 and doc["sampler"] == "grid" and doc["executor"] == "2 local processes"
    assert (doc["trials"], doc["completed"], doc["failed"], doc["ran"]) == (9, 9, 0, 9)
    assert doc["bit_exact"] is True
    out = tmp_path / "out"
    study = load(out)
    trials = study.get_trials()
    grid = set(itertools.product([2, 4, 8], ["auto", "sequential", "double-buffer"]))
    assert {(t.params["core.macros"], t.params["compile.streaming"]) for t in trials} == grid
    assert all(t.state.name == "COMPLETE" and t.user_attrs["bit_exact"] for t in trials)
    rows = csv_rows(out)
    assert len(rows) == 9 and [int(r["trial"]) for r in rows] == sorted(t.number for t in trials)
    for t, r in zip(sorted(trials, key=lambda t: t.number), rows, strict=True):
        assert int(r["makespan_cycles"]) == t.user_attrs["makespan_cycles"]
        assert t.values == [float(r["latency_us"]), float(r["energy_uj"]), float(r["area_mm2"])]
        assert r["bit_exact"] == "true" and r["error"] == ""
    # area follows the macros alone; the Pareto front is exactly the non-dominated rows
    area = {int(r["core.macros"]): float(r["area_mm2"]) for r in rows}
    assert area[2] < area[4] < area[8]
    assert doc["sensitivity"]["core.macros"]["area"] == pytest.approx(1.0)
    assert doc["sensitivity"]["compile.streaming"]["area"] == pytest.approx(0.0)
    points = {
        int(r["trial"]): [float(r[k]) for k in ("latency_us", "energy_uj", "area_mm2")]
        for r in rows
    }

    def dominated(p: list[float]) -> bool:
        return any(
            all(a <= b for a, b in zip(q, p, strict=True)) and q != p for q in points.values()
        )

    assert sorted(p["trial"] for p in doc["pareto"]) == [
        n for n, p in points.items() if not dominated(p)
    ]
    for name in ("pareto", "sensitivity", "knobs"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_failing_trials_are_recorded_and_the_sweep_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = (
        'base = "tiny"\n[knobs]\n"core.scratchpad_bytes" = [64, 16384]\n"core.macros" = [0, 4]\n'
    )
    code, doc = sweep(tmp_path, space, capsys=capsys)
    assert code == 0 and (doc["trials"], doc["completed"], doc["failed"]) == (4, 1, 3)
    rows = {(r["core.scratchpad_bytes"], r["core.macros"]): r for r in csv_rows(tmp_path / "out")}
    assert rows[("16384", "4")]["state"] == "complete"
    assert (
        "field 'core.scratchpad_bytes': 64 bytes cannot hold one MVM's operands"
        in rows[("64", "4")]["error"]
    )
    assert "field 'core.macros': must be > 0, got 0" in rows[("16384", "0")]["error"]
    assert all(r["makespan_cycles"] == "" for r in rows.values() if r["state"] == "fail")
    failed = [t for t in load(tmp_path / "out").get_trials() if t.state.name == "FAIL"]
    assert len(failed) == 3 and all("arch of trial" in t.user_attrs["error"] for t in failed)
    assert {f["trial"] for f in doc["failures"]} == {t.number for t in failed}


def test_resume_runs_only_the_missing_trials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = 'base = "tiny"\n[knobs]\n"memory.dram_gbps" = {low = 1.6, high = 12.8, log = true}\n'
    code, first = sweep(tmp_path, space, "--trials", "3", capsys=capsys)
    assert code == 0 and first["sampler"] == "NSGA-II" and (first["trials"], first["ran"]) == (3, 3)
    before = {t.number: t.params for t in load(tmp_path / "out").get_trials()}
    code, again = sweep(tmp_path, space, "--trials", "3", capsys=capsys)
    assert code == 0 and (again["trials"], again["ran"]) == (3, 0)
    code, more = sweep(tmp_path, space, "--trials", "5", capsys=capsys)
    assert code == 0 and (more["trials"], more["ran"]) == (5, 2)
    after = {t.number: t.params for t in load(tmp_path / "out").get_trials()}
    assert len(after) == 5 and {n: after[n] for n in before} == before
    assert len(csv_rows(tmp_path / "out")) == 5


def test_a_study_of_another_space_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = 'base = "tiny"\n[knobs]\n"core.macros" = [2]\n'
    assert sweep(tmp_path, space, capsys=capsys)[0] == 0
    (tmp_path / "space.toml").write_text(space.replace("[2]", "[4]"))
    code = main(
        ["sweep", MODEL, "--space", str(tmp_path / "space.toml"), "-o", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("--storage: the study there holds a sweep with another space")


BAD_CLI = [
    (["--objectives", "speed"], "--objectives: bad objectives 'speed'; write a comma-separated subset of latency,energy,area"),
    (["--objectives", "area,area"], "--objectives: bad objectives 'area,area'"),
    (["--storage", "nosuchdb://x"], "--storage: cannot open the study storage: "),
    (["--workers", "0"], "argument --workers: expected a count >= 1, got '0'"),
    (["--workers", "2", "--ray", "local"], "argument --ray: not allowed with argument --workers"),
    (["--ray", "127.0.0.1:9"], "--ray: cannot reach the Ray cluster at 127.0.0.1:9: Connection refused; start one with 'ray start --head' or use --ray local"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), BAD_CLI, ids=[" ".join(a) for a, _ in BAD_CLI])
def test_bad_options_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    space = tmp_path / "space.toml"
    space.write_text('base = "tiny"\n[knobs]\n"core.macros" = [2]\n')
    done = subprocess.run(
        [sys.executable, "-m", "cimc", "sweep", MODEL, "--space", str(space), "-o", str(tmp_path / "o"), *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1 and message in lines[0], lines


@pytest.mark.slow
def test_ray_local_gives_the_same_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray", reason="--ray needs the optional package ray (cimc[ray])")
    knobs = ("core.macros", "compile.streaming")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    code, local = sweep(tmp_path / "a", GRID, "--workers", "2", capsys=capsys)
    assert code == 0
    code, ray = sweep(tmp_path / "b", GRID, "--ray", "local", capsys=capsys)
    assert code == 0 and ray["executor"].startswith("Ray (local")
    a, b = csv_rows(tmp_path / "a" / "out"), csv_rows(tmp_path / "b" / "out")
    assert len(a) == len(b) == 9 and table(a, knobs) == table(b, knobs)


MAPPINGS = """\
base = "tiny"
[knobs]
"core.macros" = [32]
"compile.mapping" = ["spread", "duplicate", "auto"]
"""


def test_mapping_is_a_compiler_knob(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = sweep(tmp_path, MAPPINGS, "--verify", capsys=capsys)
    assert code == 0 and (doc["trials"], doc["completed"]) == (3, 3) and doc["bit_exact"] is True
    rows = {r["compile.mapping"]: r for r in csv_rows(tmp_path / "out")}
    loaded = {m: int(r["weight_bytes_loaded"]) for m, r in rows.items()}
    assert loaded["duplicate"] > loaded["spread"]  # every copy writes its tiles again
    cycles = {m: int(r["makespan_cycles"]) for m, r in rows.items()}
    assert cycles["auto"] == min(cycles["spread"], cycles["duplicate"])  # the faster of the two


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


@pytest.mark.slow
def test_ray_address_joins_a_running_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A head started apart (`ray start --head --block`, token authentication on): without
    RAY_AUTH_MODE=token the sweep is refused in one line, with it the trials run there (its
    workers' logs name them) and give --workers 2's table."""
    pytest.importorskip("ray", reason="--ray needs the optional package ray (cimc[ray])")
    from cimc.sweep.ray_cluster import check_ray_answers

    port, temp = (
        _free_port(),
        tempfile.mkdtemp(prefix="cr", dir="/tmp"),
    )  # Ray's socket paths are short
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    ray = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen(
        [ray, "start", "--head", "--block", f"--port={port}", "--num-cpus=2", f"--temp-dir={temp}",
         "--include-dashboard=false", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        for _ in range(120):
            with contextlib.suppress(CimcError):
                check_ray_answers(f"127.0.0.1:{port}")
                break
            time.sleep(0.5)
        (tmp_path / "space.toml").write_text(GRID)
        argv = [sys.executable, "-m", "cimc", "sweep", MODEL, "--space", str(tmp_path / "space.toml"),
                "--ray", f"127.0.0.1:{port}", "--json", "-o"]  # fmt: skip
        no_auth = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
        started = time.perf_counter()
        refused = subprocess.run([*argv, str(tmp_path / "r")], env=no_auth, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert time.perf_counter() - started < 60
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(lines) == 1, refused.stderr
        assert (
            f"--ray: the Ray cluster at 127.0.0.1:{port} refused this process's authentication"
            in lines[0]
        )
        joined = subprocess.run([*argv, str(tmp_path / "j")], env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
        assert joined.returncode == 0, joined.stderr
        assert json.loads(joined.stdout)["executor"] == f"Ray (127.0.0.1:{port}, 2 tasks)"
        ran = [line for out in Path(temp).glob("session_latest/logs/worker-*.out")
               for line in out.read_text().splitlines() if line == ":task_name:_ray_trial"]  # fmt: skip
        assert len(ran) == 9
        (tmp_path / "w").mkdir()
        assert sweep(tmp_path / "w", GRID, "--workers", "2", capsys=capsys)[0] == 0
        knobs = ("core.macros", "compile.streaming")
        local, there = csv_rows(tmp_path / "w" / "out"), csv_rows(tmp_path / "j")
        assert len(there) == 9 and table(local, knobs) == table(there, knobs)
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # the head and the Ray processes it started
        head.wait(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)
