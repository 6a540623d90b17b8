"""The values one micro-batch of a pipeline sees: row blocks of the whole batch's values.

Why views and not buffers of their own: batch_axes.py proved that micro-batch k of every
batch-carrying value is one contiguous block of rows of its [rows x cols] storage, so the
lowering of a node for micro-batch k reads and writes those rows in place. Values without
the batch (constants, what is computed from them alone) are seen whole, and so are the
values of one stage whose slot holds one micro-batch's rows, reused by every micro-batch
(cimc/backend/builder/values.py, `per_micro`).
"""

from __future__ import annotations

from dataclasses import replace

from cimc.backend.builder.alloc import rows
from cimc.backend.builder.values import MICRO_BUFFERS, ValueStore
from cimc.backend.plan.micro_batch import MicroBatches
from cimc.machine.program import View


class MicroStore:
    """`view(name)` of micro-batch `k`: the rows it owns of the whole value's view."""

    def __init__(self, store: ValueStore, micro: MicroBatches, k: int) -> None:
        self.store, self.micro, self.k = store, micro, k

    def view(self, name: str) -> View:
        whole = self.store.view(name)
        if not self.micro.carries(name):
            return whole
        if self.store.per_micro(name):  # buffers of one micro-batch's rows, in turn
            step = (self.k % MICRO_BUFFERS) * whole.nbytes
            return replace(whole, addr=whole.addr + step, offset=whole.offset + step)
        return rows(whole, *self.micro.row_range(name, self.k))
