"""Rows of a value kept in the scratchpads between two row-wise ops.

Why: a chain such as residual add -> layer_norm -> requantize runs every op over the same
row split of the same cores, yet each op wrote its result to gb and the next read it back,
all through the chip-wide gb port. A row-wise op (cimc/backend/lower/elementwise.py) that
has one row chunk per core keeps its output chunks in the scratchpads (they are still
written to gb for any other reader); the next row-wise op reads its first operand from
them instead of gb when it is that value with exactly that split.

A linear layer keeps its output column blocks on their home cores the same way, for an
element-wise consumer (the activation after an MLP's first layer) to work on them there.

Validity: a held chunk equals the value's rows in gb as long as nothing was emitted since
it was kept (values are written once, but a freed slot may later hold another value at
the same address), so any other instruction in between drops it. Only one set is held at
a time, at most `budget` bytes per core, and whoever takes it frees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cimc.backend.builder.asm import ProgramBuilder
from cimc.machine.program import View

CoreSpan = tuple[int, int, int]  # (core, first row or column, one past the last)


@dataclass(frozen=True)
class _Held:
    value: View
    chunks: dict[CoreSpan, View]  # (core, r0, r1) rows, or (core, c0, c1) columns (all rows)
    stamp: int  # instructions in the builder when kept
    rows: bool = True


def budget(b: ProgramBuilder) -> int:
    """Bytes per core a held chunk may take (a small share: other lowerings size their
    buffers on what is left)."""
    return b.arch.core.scratchpad_bytes // 16


def can_keep(b: ProgramBuilder, y: View, work: Sequence[CoreSpan]) -> bool:
    """One chunk per core, each within the budget."""
    cores = [c for c, _, _ in work]
    per_row = y.cols * y.elem_bytes
    return len(set(cores)) == len(cores) and all(
        (r1 - r0) * per_row <= budget(b) for _, r0, r1 in work
    )


def keep(b: ProgramBuilder, y: View, chunks: dict[CoreSpan, View], rows: bool = True) -> None:
    """Hold `chunks` (sp buffers allocated with b.alloc) as the rows of `y`, or with
    rows=False as its column blocks (core, c0, c1) of every row."""
    release(b)
    b.held_rows = _Held(y, dict(chunks), b.instruction_count(), rows)


def take(b: ProgramBuilder, x: View, work: Sequence[CoreSpan]) -> dict[CoreSpan, View] | None:
    """The held chunks when they are x's rows for exactly `work` and still valid (the
    caller then frees them); otherwise they are freed and None is returned."""
    held = b.held_rows
    if not isinstance(held, _Held):
        return None
    if (
        not held.rows
        or held.value != x
        or set(held.chunks) != set(work)
        or held.stamp != b.instruction_count()
    ):
        release(b)
        return None
    b.held_rows = None
    return held.chunks


def take_cols(b: ProgramBuilder, x: View) -> dict[CoreSpan, View] | None:
    """The held column blocks when they are all of x, still valid and on cores the caller
    may work on (`b.cores`: a pipeline stage's consumer does not work on the previous
    stage's cores); the caller frees them. Otherwise held blocks are freed (held rows are
    left to `take`), None."""
    held = b.held_rows
    if not isinstance(held, _Held) or held.rows:
        return None  # rows are for take()
    spans = sorted((c0, c1) for _, c0, c1 in held.chunks)
    covers = [c1 for _, c1 in spans[:-1]] == [c0 for c0, _ in spans[1:]]
    whole = bool(spans) and covers and spans[0][0] == 0 and spans[-1][1] == x.cols
    here = {core for core, _, _ in held.chunks} <= set(b.cores)
    if held.value != x or not whole or not here or held.stamp != b.instruction_count():
        release(b)
        return None
    b.held_rows = None
    return held.chunks


def release(b: ProgramBuilder) -> None:
    """Free whatever is held."""
    held, b.held_rows = b.held_rows, None
    if isinstance(held, _Held):
        for (core, _, _), view in held.chunks.items():
            b.free(core, view)
