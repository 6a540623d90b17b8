"""Lowering of a linear layer the map pass duplicated (`map{mapping=duplicate}`).

Why: a layer whose tiles fill few macros runs on few cores while the others idle; with
macros to spare, the planner (cimc/backend/plan/mapping.py) places whole extra copies of
its tiles on free macros. The token rows of x (batch x sequence) are split between the
copies, evenly and in order (`vector_share`, the planner's own split), and each copy
computes its rows as a layer of its own (linear.py): its cores then run in parallel with
the other copies'. Each token's dot products are those of the untiled weight whatever copy
computes them, so the outputs are bit-exact by construction. A copy writes its tiles
from the same image bytes as the original; the prefetcher streams only the original's
(copy 0), so a copy's tiles are keyed apart and its layer loads them itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cimc.backend.builder.alloc import rows
from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.lower.linear import lower_linear
from cimc.backend.lower.tiles import PlacedTile, TileKey
from cimc.backend.plan.mapping import vector_share
from cimc.machine.program import View
from cimc.quant.plans import LinearPlan


def lower_linear_copies(
    b: ProgramBuilder,
    x: View,
    y: View,
    plan: LinearPlan,
    copies: Sequence[Sequence[PlacedTile]],
    name: str,
    weight_image: Mapping[TileKey, View] | None = None,
) -> None:
    """y = REQ(x @ W + bias), the rows of x split between `copies` (copy 0 first: the
    original's slots), each copy's share lowered on its own slots."""
    start = 0
    for copy, slots in enumerate(copies):
        share = vector_share(x.rows, len(copies), copy)
        if share == 0:  # more copies than rows: the planner caps copies at the rows
            continue
        stop = start + share
        lower_linear(
            b,
            rows(x, start, stop),
            rows(y, start, stop),
            plan,
            slots=slots,
            name=name,
            weight_image=weight_image,
            copy=copy,
        )
        start = stop
