"""The sweep's table logic on hand-made rows: Pareto front and knob sensitivity; and the
study's handling of trials a killed sweep left running."""

from __future__ import annotations

from pathlib import Path

import pytest

from cimc.sweep.outputs import Row, most_sensitive, pareto_front, sensitivity

optuna = pytest.importorskip("optuna")


def row(n: int, macros: int, policy: str, latency: float, energy: float, area: float) -> Row:
    metrics = {"latency_us": latency, "energy_uj": energy, "area_mm2": area}
    return Row(
        n, "complete", {"core.macros": macros, "compile.streaming": policy}, metrics, None, ""
    )


ROWS = [
    row(0, 2, "auto", 10.0, 5.0, 1.0),
    row(1, 4, "auto", 8.0, 5.0, 2.0),
    row(2, 4, "sequential", 8.0, 6.0, 2.0),  # dominated by 1
    row(3, 8, "sequential", 6.0, 7.0, 4.0),
    row(4, 8, "auto", 6.0, 7.0, 4.0),  # equal to 3: both kept
    Row(5, "fail", {"core.macros": 16, "compile.streaming": "auto"}, {}, None, "does not fit"),
]


def test_pareto_front_keeps_non_dominated_and_ties() -> None:
    front = pareto_front(ROWS, ("latency", "energy", "area"))
    assert [r.number for r in front] == [0, 1, 3, 4]
    assert [r.number for r in pareto_front(ROWS, ("energy",))] == [0, 1]


def test_sensitivity_is_the_share_of_variance_a_knob_explains() -> None:
    table = sensitivity(ROWS, ["core.macros", "compile.streaming"], ("latency", "area"))
    assert table["latency"]["core.macros"] == pytest.approx(1.0)  # latency is a function of it
    assert table["area"]["core.macros"] == pytest.approx(1.0)
    assert 0.0 <= table["latency"]["compile.streaming"] < 0.5
    assert most_sensitive(table) == {"latency": "core.macros", "area": "core.macros"}
    flat = [row(n, n, "auto", 1.0, 1.0, 1.0) for n in range(3)]
    assert sensitivity(flat, ["core.macros"], ("latency",)) == {"latency": {"core.macros": 0.0}}
    assert most_sensitive({"latency": {"core.macros": 0.0}}) == {"latency": ""}


def test_trials_left_running_are_failed_as_interrupted_not_rerun(tmp_path: Path) -> None:
    from cimc.sweep.executors import InlineExecutor
    from cimc.sweep.space import load_space
    from cimc.sweep.study import INTERRUPTED, STUDY_NAME, SweepConfig, run_sweep

    space_file = tmp_path / "space.toml"
    space_file.write_text('base = "tiny"\n[knobs]\n"core.macros" = [0, -1]\n')
    model = str(Path(__file__).resolve().parents[2] / "examples/models/tiny_encoder.onnx")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    config = SweepConfig(model, load_space(space_file), ("latency",), None, storage)
    from cimc.sweep.study import open_study

    study, sampler, target = open_study(config)
    assert (sampler, target) == ("grid", 2)
    left = study.ask()  # as a killed sweep leaves it: RUNNING
    left.suggest_categorical("core.macros", [0, -1])
    run = run_sweep(config, InlineExecutor())
    trials = optuna.load_study(study_name=STUDY_NAME, storage=storage).get_trials()
    assert len(trials) == 2 and len(run.ran) == 1
    assert trials[0].state.name == "FAIL" and trials[0].user_attrs["error"] == INTERRUPTED
    assert trials[1].state.name == "FAIL" and "must be > 0" in trials[1].user_attrs["error"]


def test_pool_workers_compute_on_one_thread() -> None:
    """Spawned with OMP/OpenBLAS/MKL at one thread (as Ray's workers are): two workers on
    two cores, not two thread pools each as wide as the machine."""
    import os

    from cimc.sweep.executors import THREAD_VARIABLES, PoolExecutor

    if any(name in os.environ for name in THREAD_VARIABLES):
        pytest.skip("the environment sets the thread counts itself")
    pool = PoolExecutor(2)
    try:
        pids = list(pool._pool._processes)
        assert len(pids) == 2
        for pid in pids:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert {f"{name}=1".encode() for name in THREAD_VARIABLES} <= set(env)
    finally:
        pool.close()
    assert not any(name in os.environ for name in THREAD_VARIABLES)  # the parent's untouched
