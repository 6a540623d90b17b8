"""Joining a running Ray cluster (`--ray ADDRESS`): fail in seconds, in one line, and only
on a cluster that runs this cimc.

Ray's own `ray.init(address=...)` retries for minutes when the address answers but is no
Ray cluster, and for ~20 s with a C++ warning a second when the cluster wants a token this
process does not send (an explicit address never turns token authentication on by itself:
RAY_AUTH_MODE=token does). So the address is probed first (a TCP connection, then an HTTP/2
handshake: Ray's GCS and its client server speak gRPC), Ray gets a few connection attempts
instead of twenty, and its stderr during the join is read for the authentication refusal.
Once joined, one task compares the cimc a worker imports with this one's: trials run on
another version would give figures this driver's code would not, with nothing to show it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cimc.errors import CimcError
from cimc.sweep.environ import environment_defaults

REACH_SECONDS = 5.0
# Ray's connection attempts (about one a second) when joining; a reachable GCS answers the
# first. Ray's default is 20; RAY_gcs_server_port_wait_time_s set by the user wins.
JOIN_ATTEMPTS = "3"
JOIN_ATTEMPTS_VARIABLE = "RAY_gcs_server_port_wait_time_s"
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
SETTINGS_FRAME = 4
AUTH_REFUSALS = ("InvalidAuthToken", "Unauthenticated")


def check_ray_answers(address: str) -> None:
    """HOST:PORT (or ray://HOST:PORT) accepts a connection and answers an HTTP/2 handshake
    within REACH_SECONDS, else a one-line error; other forms ("auto") are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        with socket.create_connection((host, int(port)), timeout=REACH_SECONDS) as connection:
            connection.sendall(HTTP2_PREFACE)
            answer = connection.recv(9)
    except TimeoutError:
        answer = b""
    except OSError as e:
        raise CimcError(
            f"cannot reach the Ray cluster at {address}: {e.strerror or e}; start one with "
            "'ray start --head' or use --ray local",
            "--ray",
        ) from None
    if len(answer) < 4 or answer[3] != SETTINGS_FRAME:
        raise CimcError(
            f"no Ray cluster answers at {address} (the port is open but does not speak gRPC); "
            "give the address 'ray start --head' printed (its GCS port, 6379 by default)",
            "--ray",
        )


def join(ray: Any, address: str, **kwargs: Any) -> None:
    """ray.init(address=...) with few attempts; Ray's stderr is passed on when it joins and
    read for an authentication refusal when it does not."""
    with (
        tempfile.TemporaryFile("w+") as captured,
        environment_defaults({JOIN_ATTEMPTS_VARIABLE: JOIN_ATTEMPTS}),
    ):
        try:
            with _stderr_to(captured):
                ray.init(address=address, **kwargs)
        except Exception as e:  # ray's own errors: connection refused, bad address, auth
            captured.seek(0)
            said = captured.read()
            if any(word in said or word in str(e) for word in AUTH_REFUSALS):
                raise CimcError(
                    f"the Ray cluster at {address} refused this process's authentication: set "
                    "RAY_AUTH_MODE=token with the cluster's token (RAY_AUTH_TOKEN, "
                    "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)",
                    "--ray",
                ) from None
            raise CimcError(
                f"cannot join the Ray cluster at {address}: {one_line(e)}", "--ray"
            ) from None
        captured.seek(0)
        sys.stderr.write(captured.read())


def check_same_cimc(ray: Any, address: str) -> None:
    """One task on the cluster: its workers import this very cimc (same sources and ISA
    data), else a one-line error naming both."""
    if ray.cluster_resources().get("CPU", 0) < 1:
        raise CimcError(f"the Ray cluster at {address} has no CPU for a trial", "--ray")
    task = ray.remote(num_cpus=1)(cimc_identity)
    try:
        theirs = ray.get(task.remote())
    except Exception as e:  # the worker cannot import cimc, or dies
        raise CimcError(
            f"a Ray worker at {address} cannot run cimc: {one_line(e)}; every node must "
            "import cimc",
            "--ray",
        ) from None
    ours = cimc_identity()
    if (theirs[0], theirs[2]) != (ours[0], ours[2]):  # the same code may sit elsewhere
        raise CimcError(
            f"the Ray cluster at {address} runs another cimc ({theirs[0]} at {theirs[1]}, "
            f"sources {theirs[2][:12]}) than this process ({ours[0]} at {ours[1]}, sources "
            f"{ours[2][:12]}); its trials would not be this cimc's: install the same cimc on "
            "every node",
            "--ray",
        )


def cimc_identity() -> tuple[str, str, str]:
    """cimc's version, where it is imported from and a sha256 of its Python sources and ISA
    data (relative paths and bytes): equal digests mean the same compiler and machine."""
    import cimc
    from cimc.resources import isa_dir

    package = Path(cimc.__file__).parent
    digest = hashlib.sha256()
    for root, pattern in ((package, "*.py"), (isa_dir(), "*.toml"), (isa_dir(), "*.lark")):
        for path in sorted(root.rglob(pattern)):
            digest.update(f"{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return cimc.__version__, str(package.parent), digest.hexdigest()


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__


@contextlib.contextmanager
def _stderr_to(file: Any) -> Iterator[None]:
    """File descriptor 2 (Ray's C++ core writes there, not to sys.stderr) into `file`."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
