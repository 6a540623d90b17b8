"""Where trials run: in this process, in a pool of local processes, or as Ray tasks.

Each executor submits `run_trial(job)` and hands back a `concurrent.futures.Future`, so the
study's loop waits on processes and Ray tasks alike (a Ray `ObjectRef.future()` is one).
Only the main process talks to the study's storage; workers compute and return data.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import multiprocessing
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from cimc.errors import CimcError
from cimc.sweep.trial import TrialJob, TrialResult, run_trial


class Executor(Protocol):
    width: int  # trials in flight at once
    name: str

    def submit(self, job: TrialJob) -> cf.Future[TrialResult]: ...

    def close(self) -> None: ...


# Thread pools read these when they start: a worker started with them computes on one
# thread (numpy's BLAS, OpenMP), as Ray's workers do, so W workers use W cores, not W x cores.
REACH_SECONDS = 5.0
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _init_worker() -> None:
    """One compute thread per worker (torch's own pool is set here, after its import)."""
    import torch

    torch.set_num_threads(1)


def _ready(_: int) -> None:
    """A no-op job: submitting one per worker starts every worker at once."""


@contextlib.contextmanager
def _one_thread_environment() -> Iterator[None]:
    """THREAD_VARIABLES set to 1 (unless the user set them) while workers are spawned."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    for name, value in saved.items():
        if value is None:
            os.environ[name] = "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)


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
        with _one_thread_environment():  # a spawned worker inherits the environment now
            list(self._pool.map(_ready, range(workers)))

    def submit(self, job: TrialJob) -> cf.Future[TrialResult]:
        return self._pool.submit(run_trial, job)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Each trial a Ray task, on a local cluster this process starts (`local`) or on the
    cluster at `address` (every node must be able to import cimc and read the model)."""

    def __init__(self, address: str, workers: int | None) -> None:
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")  # before its C++ core loads
        if address != "local":
            _check_reachable(address)  # ray.init retries an unreachable address for minutes
        try:
            import ray
        except ModuleNotFoundError:
            raise CimcError(
                "--ray needs the optional package 'ray': pip install 'cimc[sweep]'", "--ray"
            ) from None
        self._ray = ray
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
        paths = [package_root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}}  # cimc, as imported here
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.ERROR,  # Ray's INFO lines would bury the sweep's
        }
        try:
            if address == "local":
                cpus = workers or os.cpu_count() or 1
                # address="local": a new cluster, even where RAY_ADDRESS or a running one is
                ray.init(address="local", num_cpus=cpus, runtime_env=env, **kwargs)
            else:
                ray.init(address=address, **kwargs)
        except Exception as e:  # ray's own errors: connection refused, bad address
            raise CimcError(f"cannot start or join the Ray cluster: {_line(e)}", "--ray") from None
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.width = max(1, min(workers or cpus, cpus))
        self.name = f"Ray ({'local' if address == 'local' else address}, {self.width} tasks)"
        self._task: Callable[..., Any] = ray.remote(num_cpus=1)(_ray_trial).remote

    def submit(self, job: TrialJob) -> cf.Future[TrialResult]:
        return self._task(job).future()  # type: ignore[no-any-return]

    def close(self) -> None:
        self._ray.shutdown()


def _check_reachable(address: str) -> None:
    """A TCP connection to HOST:PORT (or ray://HOST:PORT) within a few seconds, else a
    one-line error; other forms ("auto") are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=REACH_SECONDS).close()
    except OSError as e:
        raise CimcError(
            f"cannot reach the Ray cluster at {address}: {e.strerror or e}; start one with "
            "'ray start --head' or use --ray local",
            "--ray",
        ) from None


def _ray_trial(job: TrialJob) -> TrialResult:
    _init_worker()
    return run_trial(job)


def _line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__


def make_executor(workers: int | None, ray: str | None) -> Executor:
    if ray is not None:
        return RayExecutor(ray, workers)
    if workers is None or workers == 1:
        return InlineExecutor()
    return PoolExecutor(workers)
