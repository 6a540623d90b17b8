"""Environment variables set for a while: what child processes and Ray read when they start."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def environment_defaults(values: dict[str, str]) -> Iterator[None]:
    """`values` set in os.environ where the user set nothing, for the duration only."""
    saved = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        if saved[name] is None:
            os.environ[name] = value
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
