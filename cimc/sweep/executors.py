"""Where trials run: in this process, in a pool of local processes, or as Ray tasks.

Each executor submits `run_trial(job)` and hands back a `concurrent.futures.Future`, so the
study's loop waits on processes and Ray tasks alike (a Ray `ObjectRef.future()` is one).
Only the main process talks to the study's storage; workers compute and return data.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
from collections.abc import Callable
from typing import Any, Protocol

from cimc.errors import CimcError
from cimc.sweep import ray_cluster
from cimc.sweep.environ import environment_defaults
from cimc.sweep.trial import TrialJob, TrialResult, run_trial


class Executor(Protocol):
    width: int  # trials in flight at once
    name: str

    def submit(self, job: TrialJob) -> cf.Future[TrialResult]: ...

    def close(self) -> None: ...


# Thread pools read these when they start: a worker started with them computes on one
# thread (numpy's BLAS, OpenMP), as Ray's workers do, so W workers use W cores, not W x cores.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _init_worker() -> None:
    """One compute thread per worker (torch's own pool is set here, after its import)."""
    import torch

    torch.set_num_threads(1)


def _ready(_: int) -> None:
    """A no-op job: submitting one per worker starts every worker at once."""


class InlineExecutor:
    """Trials one after the other in this process (--workers 1)."""

    width, name = 1, "inline"

    def submit(self, job: TrialJob) -> cf.Future[TrialResult]:
        future: cf.Future[TrialResult] = cf.Future()
        future.set_result(run_trial(job))
        return future

    def close(self) -> None:
        pass


class PoolExecutor:
    """`workers` local processes (spawned: a fresh interpreter each, no forked torch state)."""

    def __init__(self, workers: int) -> None:
        self.width, self.name = workers, f"{workers} local processes"
        context = multiprocessing.get_context("spawn")
        self._pool = cf.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker)
        # a spawned worker inherits the environment now
        with environment_defaults(dict.fromkeys(THREAD_VARIABLES, "1")):
            list(self._pool.map(_ready, range(workers)))

    def submit(self, job: TrialJob) -> cf.Future[TrialResult]:
        return self._pool.submit(run_trial, job)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Each trial a Ray task, on a local cluster this process starts (`local`) or on the
    cluster at `address` (every node must import this cimc and read the model)."""

    def __init__(self, address: str, workers: int | None) -> None:
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")  # before its C++ core loads
        if address != "local":
            ray_cluster.check_ray_answers(address)  # before ray.init, which retries for minutes
        try:
            import ray
        except ModuleNotFoundError:
            raise CimcError(
                "--ray needs the optional package 'ray': pip install 'cimc[ray]'", "--ray"
            ) from None
        self._ray = ray
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
        paths = [package_root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        # cimc as imported here, ahead of what a node has ("${...}": Ray expands it there)
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join([*paths, "${PYTHONPATH}"])}}
        kwargs: dict[str, Any] = {
            "runtime_env": env,
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.ERROR,  # Ray's INFO lines would bury the sweep's
        }
        if address == "local":
            cpus = workers or os.cpu_count() or 1
            try:  # address="local": a new cluster, even where RAY_ADDRESS or a running one is
                ray.init(address="local", num_cpus=cpus, **kwargs)
            except Exception as e:  # ray's own errors
                raise CimcError(
                    f"cannot start a local Ray cluster: {ray_cluster.one_line(e)}", "--ray"
                ) from None
        else:
            ray_cluster.join(ray, address, **kwargs)
            try:
                ray_cluster.check_same_cimc(ray, address)
            except CimcError:
                ray.shutdown()  # leave the cluster as found
                raise
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.width = max(1, min(workers or cpus, cpus))
        self.name = f"Ray ({address}, {self.width} tasks)"
        self._task: Callable[..., Any] = ray.remote(num_cpus=1)(_ray_trial).remote

    def submit(self, job: TrialJob) -> cf.Future[TrialResult]:
        return self._task(job).future()  # type: ignore[no-any-return]

    def close(self) -> None:
        self._ray.shutdown()


def _ray_trial(job: TrialJob) -> TrialResult:
    _init_worker()
    return run_trial(job)


def make_executor(workers: int | None, ray: str | None) -> Executor:
    if ray is not None:
        return RayExecutor(ray, workers)
    if workers is None or workers == 1:
        return InlineExecutor()
    return PoolExecutor(workers)
