"""Joining a Ray cluster (cimc/sweep/ray_cluster.py) without Ray: the address probe against
small local servers, the stderr of a refused join, the check that workers run this cimc."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cimc.errors import CimcError
from cimc.sweep import ray_cluster
from cimc.sweep.environ import environment_defaults

SETTINGS = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # an empty HTTP/2 SETTINGS frame, as gRPC sends


@pytest.fixture
def server() -> Iterator[Callable[[bytes | None], str]]:
    """A one-connection TCP server on 127.0.0.1 that answers `reply` (None: stays silent)."""
    listeners: list[socket.socket] = []

    def start(reply: bytes | None) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def serve() -> None:
            with contextlib.suppress(OSError):  # the test closed the listener first
                connection, _ = listener.accept()
                connection.recv(64)
                if reply is not None:
                    connection.sendall(reply)
                time.sleep(2)
                connection.close()

        threading.Thread(target=serve, daemon=True).start()
        return f"127.0.0.1:{listener.getsockname()[1]}"

    yield start
    for listener in listeners:
        listener.close()


def test_a_grpc_server_answers(server: Callable[[bytes | None], str]) -> None:
    ray_cluster.check_ray_answers(server(SETTINGS))


@pytest.mark.parametrize(
    "reply", [b"HTTP/1.0 400 Bad Request\r\n\r\n", None], ids=["http", "silent"]
)
def test_a_port_that_is_no_ray_cluster_is_one_line(
    server: Callable[[bytes | None], str], reply: bytes | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ray_cluster, "REACH_SECONDS", 0.5)
    address = server(reply)
    started = time.perf_counter()
    with pytest.raises(CimcError) as info:
        ray_cluster.check_ray_answers(f"ray://{address}")
    assert time.perf_counter() - started < 5
    assert info.value.location == "--ray"
    assert info.value.message.startswith(f"no Ray cluster answers at ray://{address} (the port")


def test_a_closed_port_is_one_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # free once closed
    with pytest.raises(CimcError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}: "):
        ray_cluster.check_ray_answers(f"127.0.0.1:{port}")


class FakeRay:
    """What ray_cluster calls of the `ray` module; `init` writes to fd 2 as Ray's C++ core."""

    def __init__(self, said: bytes = b"", fails: bool = False, answer: Any = None) -> None:
        self.said, self.fails, self.answer = said, fails, answer
        self.cpus = 2.0
        self.init_environment: str | None = None

    def init(self, address: str, **kwargs: Any) -> None:
        self.init_environment = os.environ.get(ray_cluster.JOIN_ATTEMPTS_VARIABLE)
        os.write(2, self.said)
        if self.fails:
            raise ConnectionError(f"Failed to connect to Ray cluster at {address}")

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": self.cpus}

    def remote(self, num_cpus: int) -> Callable[[Callable[[], Any]], Any]:
        ray = self

        class Task:
            def __init__(self, function: Callable[[], Any]) -> None:
                self.function = function

            def remote(self) -> Callable[[], Any]:
                return self.function if ray.answer is None else ray.answer

        return Task

    def get(self, ref: Callable[[], Any]) -> Any:
        return ref()


REFUSAL = b"gcs_client.cc:210: Failed to get cluster ID from GCS server: Unauthenticated: RPC error: InvalidAuthToken\n"  # noqa: E501


def test_a_refused_token_is_one_line_naming_ray_auth_mode(
    capfd: pytest.CaptureFixture[str],
) -> None:
    ray = FakeRay(said=REFUSAL * 3, fails=True)
    with pytest.raises(CimcError) as info:
        ray_cluster.join(ray, "10.0.0.1:6379")
    assert info.value.message.startswith(
        "the Ray cluster at 10.0.0.1:6379 refused this process's authentication: set "
        "RAY_AUTH_MODE=token"
    )
    assert capfd.readouterr().err == ""  # Ray's retries are not shown
    assert ray.init_environment == ray_cluster.JOIN_ATTEMPTS
    assert ray_cluster.JOIN_ATTEMPTS_VARIABLE not in os.environ


def test_other_join_failures_name_the_address(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CimcError) as info:
        ray_cluster.join(FakeRay(said=b"something else\n", fails=True), "10.0.0.1:6379")
    assert info.value.message == (
        "cannot join the Ray cluster at 10.0.0.1:6379: Failed to connect to Ray cluster at "
        "10.0.0.1:6379"
    )


def test_a_join_passes_rays_messages_on(capfd: pytest.CaptureFixture[str]) -> None:
    ray_cluster.join(FakeRay(said=b"ray: a note\n"), "10.0.0.1:6379")
    assert capfd.readouterr().err == "ray: a note\n"


def test_the_users_join_attempts_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ray_cluster.JOIN_ATTEMPTS_VARIABLE, "40")
    ray = FakeRay()
    ray_cluster.join(ray, "10.0.0.1:6379")
    assert ray.init_environment == "40"


def test_workers_running_this_cimc_pass() -> None:
    ray_cluster.check_same_cimc(FakeRay(), "10.0.0.1:6379")


def test_workers_running_another_cimc_are_refused() -> None:
    version, where, digest = ray_cluster.cimc_identity()
    other = (version, "/opt/elsewhere", "0" * 64)
    with pytest.raises(CimcError) as info:
        ray_cluster.check_same_cimc(FakeRay(answer=lambda: other), "10.0.0.1:6379")
    assert info.value.message.startswith(
        f"the Ray cluster at 10.0.0.1:6379 runs another cimc ({version} at /opt/elsewhere, "
        f"sources 000000000000) than this process ({version} at {where}, sources {digest[:12]})"
    )
    moved = (version, "/opt/elsewhere", digest)  # the same code installed elsewhere is fine
    ray_cluster.check_same_cimc(FakeRay(answer=lambda: moved), "10.0.0.1:6379")


def test_workers_that_cannot_import_cimc_or_a_cluster_without_cpus_are_refused() -> None:
    def missing() -> None:
        raise ModuleNotFoundError("No module named 'cimc'")

    with pytest.raises(CimcError, match="a Ray worker at h:1 cannot run cimc: No module named"):
        ray_cluster.check_same_cimc(FakeRay(answer=missing), "h:1")
    ray = FakeRay()
    ray.cpus = 0
    with pytest.raises(CimcError, match="the Ray cluster at h:1 has no CPU for a trial"):
        ray_cluster.check_same_cimc(ray, "h:1")


def test_the_identity_follows_the_sources() -> None:
    version, where, digest = ray_cluster.cimc_identity()
    assert (version, len(digest)) == (__import__("cimc").__version__, 64)
    assert ray_cluster.cimc_identity() == (version, where, digest)


def test_environment_defaults_leave_the_users_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIMC_TEST_SET", "mine")
    monkeypatch.delenv("CIMC_TEST_UNSET", raising=False)
    with environment_defaults({"CIMC_TEST_SET": "1", "CIMC_TEST_UNSET": "1"}):
        assert (os.environ["CIMC_TEST_SET"], os.environ["CIMC_TEST_UNSET"]) == ("mine", "1")
    assert os.environ["CIMC_TEST_SET"] == "mine" and "CIMC_TEST_UNSET" not in os.environ
