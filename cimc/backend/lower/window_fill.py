"""The window cache of a sparse layer whose rows live in flash (cimc/backend/plan/window.py):
each run copies into the DRAM cache the rows of the neurons it needs that the cache does
not hold, and ages the neurons.

Integer steps, on the layer's first core (the leader), before any core gathers a row:
1. act[j] = max over the tokens of x[t, j]^2, non-zero iff neuron j is active in the run
   (transpose, mul, rmax);
2. ages from the `.state` (dma); need[j] = age[j] != 0 ? 0 : act[j] (sel): active and
   not cached; load = nzidx(need^T), the neurons to copy; `dma.m cache, rows, load`
   copies their whole rows (contiguous in the neuron-major constant) from flash;
3. age[j] = act[j] != 0 ? K : max(age[j] - 1, 0) (sub, max, sel), stored back;
4. one element sent to every other core of the layer, received before its first gather:
   the cache is complete before it is read (the validator's race check proves the order).
Bit-exact by construction: a row the tiles gather belongs to an active neuron, so it was
copied in this run or its age is non-zero, i.e. an earlier run copied it from the same
constant and nothing else writes the cache. Zero ages (a fresh state) mean nothing is
cached, so the first run copies every active row.
"""

from __future__ import annotations

from dataclasses import dataclass

from cimc.backend.builder.alloc import sub
from cimc.backend.builder.asm import ProgramBuilder
from cimc.machine.program import DType, View


@dataclass(frozen=True)
class WindowCache:
    """A layer's cache of neuron rows in DRAM, its ages and its window."""

    rows: View  # the neuron-major constant in flash [K x N]
    cache: View  # `.state NAME.rows.cache` [K x N] i8
    ages: View  # `.state NAME.rows.age` [K x 1] i8
    window: int


def declare_cache(b: ProgramBuilder, name: str, rows: View, window: int) -> WindowCache:
    k, n = rows.shape
    cache = b.state(f"{name}.rows.cache", "i8", k, n)
    ages = b.state(f"{name}.rows.age", "i8", k, 1)
    return WindowCache(rows, cache, ages, window)


def fill_bytes(t: int, k: int) -> int:
    """Scratchpad bytes the leader's fill takes (x^T and its squares, the columns)."""
    return t * k * (1 + 4) + k * (4 + 1 + 4 + 4 + 8 + 1) + 8 * 64


def fill_cache(
    b: ProgramBuilder, leader: int, xs: View, wc: WindowCache, index_dtype: DType
) -> View:
    """Steps 1-3 on the leader from its copy of x [T x K]; returns a 1x1 view to send."""
    t, k = xs.shape
    xt, sq = b.alloc(leader, "i8", k, t), b.alloc(leader, "i32", k, t)
    act = b.alloc(leader, "i32", k, 1)
    b.emit(leader, "transpose", xt, xs)
    b.emit(leader, "mul", sq, xt, xt)
    b.emit(leader, "rmax", act, sq)
    b.free(leader, xt, sq)
    age, older = b.alloc(leader, "i8", k, 1), b.alloc(leader, "i8", k, 1)
    need, need_t = b.alloc(leader, "i32", k, 1), b.alloc(leader, "i32", 1, k)
    load = b.alloc(leader, index_dtype, k, 1)
    b.emit(leader, "dma", age, wc.ages)
    b.emit(leader, "sel", need, age, 0, act)
    b.emit(leader, "transpose", need_t, need)
    b.emit(leader, "nzidx", load, need_t)
    b.emit(leader, "dma.m", wc.cache, wc.rows, load)
    b.emit(leader, "sub", older, age, 1)
    b.emit(leader, "max", older, older, 0)
    b.emit(leader, "sel", age, act, wc.window, older)
    b.emit(leader, "dma", wc.ages, age)
    b.free(leader, act, age, older, need, need_t)
    return load


def publish(b: ProgramBuilder, leader: int, token: View, cores: list[int]) -> None:
    """Every other core waits for the leader's fill (a one-element message)."""
    one = sub(token, 0, 1, 0, 1)
    for core in cores:
        if core == leader:
            continue
        got = b.alloc(core, token.dtype, 1, 1)
        b.transfer(leader, one, core, got)
        b.free(core, got)
    b.free(leader, token)
