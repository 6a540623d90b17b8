"""Constants in flash, read where they are stored instead of copied into the machine.

Why: flash holds the model image (isa/SPEC.md, "Memory hierarchy"), up to gigabytes, and is
read-only while a program runs. Copying it into the interpreter's flat flash memory at
every run would hold it twice (the constants, often a mapped file, and the copy). So each
flash `.const` stays a segment of its own bytes, and a view inside one segment reads it
in place. A view no single segment holds (unwritten flash, or one spanning two constants,
which the compiler never emits) falls back to the flat memory, into which the segments
are then copied once: the same bytes either way.
"""

from __future__ import annotations

import bisect

import numpy as np


class FlashConsts:
    """Non-overlapping byte segments of flash, by address."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._segments: list[tuple[int, np.ndarray]] = []  # (start, bytes), by start
        self._added: list[tuple[int, np.ndarray]] = []  # the same, in declaration order
        self.overlapping = False  # two segments overlap: only the flat memory is exact

    def add(self, addr: int, data: np.ndarray) -> None:
        """Constant `data` (any dtype) stored at flash[addr]; viewed, not copied, when it
        is contiguous."""
        little = np.ascontiguousarray(data, data.dtype.newbyteorder("<"))  # the machine's order
        raw = little.reshape(-1).view(np.uint8)
        k = bisect.bisect_right(self._starts, addr)
        before = self._segments[k - 1] if k else None
        after = self._segments[k] if k < len(self._segments) else None
        if (before and before[0] + before[1].size > addr) or (after and addr + raw.size > after[0]):
            self.overlapping = True
        self._starts.insert(k, addr)
        self._segments.insert(k, (addr, raw))
        self._added.append((addr, raw))

    def find(self, addr: int, end: int) -> tuple[np.ndarray, int] | None:
        """(segment bytes, offset of addr in them) of the segment holding [addr, end)."""
        if self.overlapping:
            return None
        k = bisect.bisect_right(self._starts, addr) - 1
        if k < 0:
            return None
        start, raw = self._segments[k]
        return (raw, addr - start) if end <= start + raw.size else None

    def copy_into(self, flat: np.ndarray) -> None:
        """Write every segment into the flat flash memory, in declaration order (a later
        constant overwrites an overlapping earlier one, as copies would)."""
        for start, raw in self._added:
            flat[start : start + raw.size] = raw
