"""The Optuna study of a sweep: its storage, sampler and the ask-run-tell loop.

The study lives in SQLite in the output folder by default (any SQLAlchemy URL with
`storage`), so a rerun resumes it: `trials` is the total the study should hold, and only
the missing ones run. Sampler: `GridSampler` when every knob is a finite list and the grid
has at most `trials` points (every point once), else multi-objective NSGA-II; both seeded.

The main process asks `executor.width` trials, runs them at once on the executor, then
tells their results in trial order: a batch's asks never depend on which worker finished
first, so a seeded sweep gives the same trials whatever the workers' timing. A failed trial
(invalid arch, model does not fit) is told FAIL with its reason in the `error` user
attribute; the sweep goes on.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cimc.errors import CimcError
from cimc.sweep.executors import Executor
from cimc.sweep.space import Knob, Space
from cimc.sweep.trial import OBJECTIVES, TrialJob, TrialResult

STUDY_NAME = "cimc-sweep"
DEFAULT_TRIALS = 50
INTERRUPTED = "interrupted: the sweep that ran it stopped before it finished"


@dataclass(frozen=True)
class SweepConfig:
    model: str
    space: Space
    objectives: tuple[str, ...]  # keys of OBJECTIVES
    trials: int | None  # total the study should hold; None: the grid, or DEFAULT_TRIALS
    storage: str  # SQLAlchemy URL
    verify: bool = False
    seed: int = 0


@dataclass(frozen=True)
class SweepRun:
    study: Any  # optuna.Study
    target: int  # trials the study should hold
    ran: tuple[TrialResult, ...]  # the trials this run computed
    sampler: str


def open_study(config: SweepConfig) -> tuple[Any, str, int]:
    """Create or load the study; refuse one that holds another sweep."""
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    grid = config.space.grid
    size = config.space.grid_size
    target = config.trials if config.trials is not None else (size or DEFAULT_TRIALS)
    sampler: Any
    if grid is not None and size is not None and size <= target:
        sampler, name = _grid_sampler(grid, config.seed), "grid"
        target = size
    else:
        sampler, name = optuna.samplers.NSGAIISampler(seed=config.seed), "NSGA-II"
    directions: list[Any] = ["minimize"] * len(config.objectives)
    try:
        storage = optuna.storages.RDBStorage(config.storage)
    except Exception as e:  # SQLAlchemy: bad URL, unknown dialect, unreachable server
        raise CimcError(f"cannot open the study storage: {_line(e)}", "--storage") from None
    study = optuna.create_study(
        storage=storage,
        study_name=STUDY_NAME,
        sampler=sampler,
        directions=directions,
        load_if_exists=True,
    )
    _check_same_sweep(study, config, name)
    return study, name, target


def _grid_sampler(grid: Mapping[str, Sequence[Any]], seed: int) -> Any:
    """Optuna's GridSampler without its stop at the last point: `GridSampler.after_trial`
    calls `study.stop()`, which only works inside `study.optimize`, and this loop asks and
    tells (it stops when the study holds the grid's size)."""
    import optuna

    class Grid(optuna.samplers.GridSampler):
        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            pass

    return Grid(grid, seed=seed)


def _check_same_sweep(study: Any, config: SweepConfig, sampler: str) -> None:
    identity = {
        "space": config.space.fingerprint(),
        "model": str(Path(config.model).resolve()),
        "objectives": ",".join(config.objectives),
        "verify": config.verify,
        "sampler": sampler,
    }
    held = study.user_attrs
    if not held:
        for key, value in identity.items():
            study.set_user_attr(key, value)
        study.set_user_attr("knobs", [k.name for k in config.space.knobs])
        return
    for key, value in identity.items():
        if held.get(key) != value:
            raise CimcError(
                f"the study there holds a sweep with another {key} ({held.get(key)!r}, now "
                f"{value!r}); write to another -o folder or --storage, or delete it to start over",
                "--storage",
            )


def run_sweep(
    config: SweepConfig,
    executor: Executor,
    on_result: Callable[[TrialResult, int, int], None] = lambda r, done, total: None,
    opened: tuple[Any, str, int] | None = None,
) -> SweepRun:
    """Run the trials missing from the study (`opened`: what `open_study` returned, when
    the caller opened it first to refuse a wrong study before starting workers)."""
    from optuna.trial import TrialState

    study, sampler, target = opened or open_study(config)
    _close_stale(study)
    done = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
    ran: list[TrialResult] = []
    while done < target:
        batch = []
        for _ in range(min(executor.width, target - done)):
            trial = study.ask()
            params = {k.name: _suggest(trial, k) for k in config.space.knobs}
            batch.append((trial, _job(config, trial.number, params)))
        futures = {executor.submit(job): job for _, job in batch}
        results: dict[int, TrialResult] = {}
        try:
            for future in cf.as_completed(futures):
                result = _result(future, futures[future].number, futures[future].params)
                results[result.number] = result
                on_result(result, done + len(results), target)
        except KeyboardInterrupt:
            for trial, _ in batch:  # tell what finished; the rest were interrupted
                if trial.number not in results:
                    trial.set_user_attr("error", INTERRUPTED)
                    study.tell(trial, state=TrialState.FAIL)
                else:
                    _tell(study, trial, results[trial.number], config.objectives)
            raise
        for trial, _ in batch:
            _tell(study, trial, results[trial.number], config.objectives)
            ran.append(results[trial.number])
        done += len(batch)
    return SweepRun(study, target, tuple(ran), sampler)


def _close_stale(study: Any) -> None:
    """Trials left RUNNING by a sweep that was killed: failed, with the reason."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "error", INTERRUPTED)
        study.tell(t.number, state=TrialState.FAIL)


def _suggest(trial: Any, knob: Knob) -> Any:
    if knob.finite:
        return trial.suggest_categorical(knob.name, list(knob.values))
    if knob.type is int:
        return trial.suggest_int(knob.name, int(knob.low), int(knob.high), log=knob.log)
    return trial.suggest_float(knob.name, knob.low, knob.high, log=knob.log)


def _job(config: SweepConfig, number: int, params: dict[str, Any]) -> TrialJob:
    space = config.space
    return TrialJob(
        number=number,
        model=str(Path(config.model).resolve()),
        base_arch=space.base_arch,
        params=params,
        compile=dict(space.compile),
        calibration=space.calibration,
        verify=config.verify,
    )


def _result(future: cf.Future[TrialResult], number: int, params: dict[str, Any]) -> TrialResult:
    """The trial's result, or a failure naming why its worker did not return one."""
    try:
        return future.result()
    except Exception as e:  # the worker died (out of memory, killed) or Ray lost the task
        return TrialResult(number, params, error=f"worker failed: {_line(e)}")


def _tell(study: Any, trial: Any, result: TrialResult, objectives: tuple[str, ...]) -> None:
    from optuna.trial import TrialState

    trial.set_user_attr("seconds", result.seconds)
    if not result.ok:
        trial.set_user_attr("error", result.error)
        study.tell(trial, state=TrialState.FAIL)
        return
    for key, value in result.metrics.items():
        trial.set_user_attr(key, value)
    if result.bit_exact is not None:
        trial.set_user_attr("bit_exact", result.bit_exact)
    study.tell(trial, [float(result.metrics[OBJECTIVES[o]]) for o in objectives])


def _line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__
