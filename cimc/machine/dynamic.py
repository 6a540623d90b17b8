"""Run-time facts of data-dependent instructions, for the cost model.

`gather.m`, `mload.m` and `mload.t.m` move only the rows their index column names (a negative entry:
no row), so what they cost depends on the run. The interpreter records the index column
each of them read, by (core, pc) (`RunResult.dynamic`); `simulate(..., dynamic=...)` and
the cost functions price that run's rows. Without a record an instruction is priced as if
every row were named (the dense worst case), so a program's static cost is an upper bound
of every run's.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cimc.machine.program import View

Dynamic = Mapping[tuple[int, int], np.ndarray]  # (core, pc) -> index column (int64)


def named_rows(index: np.ndarray | None, rows: int) -> np.ndarray:
    """The row numbers an index column names, in its order (None: all `rows`)."""
    if index is None:
        return np.arange(rows, dtype=np.int64)
    return index[index >= 0]


def valid_count(index: np.ndarray | None, rows: int) -> int:
    """How many entries of the index column name a row (None: every one)."""
    return rows if index is None else int(np.count_nonzero(index >= 0))


def chunks_touched(table: View, rows: np.ndarray, chunk: int) -> int:
    """Distinct `chunk`-aligned blocks of the table's space holding a byte of the named
    rows: what a flash read of those rows costs, each chunk read once."""
    if rows.size == 0:
        return 0
    size = table.elem_bytes
    starts = table.addr + rows * table.stride * size
    first, last = starts // chunk, (starts + table.cols * size - 1) // chunk
    spans = [np.arange(a, z + 1) for a, z in zip(first, last, strict=True)]
    blocks = np.unique(np.concatenate(spans))
    return int(blocks.size)
