"""`gc_paused`: no cyclic garbage collection inside a block.

Its own module, not the machine's: the pass manager pauses collection around backend passes,
and the quantizer and the integer golden import the pass manager without ever importing the
machine (the golden's independence, tests/quant/test_golden.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block (restored after, if it was on).

    A run or a backend pass allocates many short-lived objects but few reference cycles,
    and every collection it triggers walks all objects of the process: with a large model's
    graph and program loaded that cost more than the work itself (benchmarks/FINDINGS.md,
    "Interpreter: no GC during a run")."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
