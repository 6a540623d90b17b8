"""Decode programs by attention window: a decode step's cost follows the filled positions.

The ISA is straight-line, so a program cannot attend over a run-time number of cache
slots. Instead each decode step runs the program compiled for its *windows*: sequence s
attends over the first `window(p_s)` slots of its cache, its position p_s rounded up to a
multiple of the attention block (at most the capacity C). The programs differ only in
their attention lowerings: the weights, their macros (the attention reserves room for the
whole cache whatever the window), the value homes and the memory plan are the same, so
weights kept in the macros (cimc/decode/warm.py) carry over from one window to the next.
Programs are compiled when a step first needs them and kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cimc.backend.builder.compiled import Compiled
from cimc.decode.axes import SeqAxes
from cimc.decode.specialize import BatchShape, specialize
from cimc.decode.warm import WarmDecode, warm_decode
from cimc.errors import CimcError
from cimc.ir.graph import Graph
from cimc.machine.validator import validate

DEFAULT_BLOCK = 32  # attention window granularity: programs compiled per 32 positions


def window(position: int, block: int, capacity: int) -> int:
    """Cache slots a row at `position` attends over: the position rounded up to the block
    (0: the whole capacity)."""
    if block <= 0:
        return capacity
    return min(capacity, math.ceil((position + 1) / block) * block)


def check_block(block: int) -> int:
    if block < 0:
        raise CimcError(
            "must be 0 (the whole capacity) or a number of positions", "--attention-block"
        )
    return block


@dataclass(frozen=True)
class Variant:
    compiled: Compiled
    warm: WarmDecode | None


@dataclass
class DecodeVariants:
    """Decode programs of one batch by windows, compiled on demand by `compile_graph`
    (the decode graph through the backend, with the programs' shared memory plan)."""

    graph: Graph  # the capacity-C integer graph
    axes: SeqAxes
    sequences: int
    block: int
    compile_graph: Callable[[Graph], Compiled]
    keep_weights: bool
    cache: dict[tuple[int, ...], Variant] = field(default_factory=dict)

    def windows(self, positions: Sequence[int]) -> tuple[int, ...]:
        return tuple(window(p, self.block, self.axes.capacity) for p in positions)

    def get(self, windows: tuple[int, ...]) -> Variant:
        if windows not in self.cache:
            shape = BatchShape((1,) * self.sequences, windows)
            graph = specialize(self.graph, self.axes, self.sequences, shape)
            self.cache[windows] = variant_of(self.compile_graph(graph), self.keep_weights)
        return self.cache[windows]


def variant_of(compiled: Compiled, keep_weights: bool) -> Variant:
    warm = warm_decode(compiled.program) if keep_weights else None
    if warm is not None:
        validate(warm.cold, compiled.arch)
        validate(warm.warm, compiled.arch)
    return Variant(compiled, warm)
