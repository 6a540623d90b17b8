"""Arrays that view a memory-mapped file (weights the importers map from a model file).

Why: a mapped page a pass has read stays in the process's resident set until the mapping
goes, although the file holds the same bytes. `release_pages` drops a mapping's pages
from the process (the kernel keeps them in its page cache, and a later read maps them
again, unchanged), so the float weights of a quantized model do not sit beside the
integer ones for the rest of a compile.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterable

import numpy as np


def mapping_of(array: np.ndarray) -> mmap.mmap | None:
    """The memory map `array` views, if any."""
    base: object = array
    while isinstance(base, np.ndarray | memoryview):
        base = base.obj if isinstance(base, memoryview) else base.base
    return base if isinstance(base, mmap.mmap) else None


def release_pages(arrays: Iterable[np.ndarray]) -> int:
    """Drop the resident pages of every mapping the arrays view; returns how many
    mappings (no-op where the platform has no MADV_DONTNEED)."""
    maps = {id(m): m for a in arrays if (m := mapping_of(a)) is not None and not m.closed}
    if not hasattr(mmap, "MADV_DONTNEED"):
        return 0
    for m in maps.values():
        m.madvise(mmap.MADV_DONTNEED)
    return len(maps)
