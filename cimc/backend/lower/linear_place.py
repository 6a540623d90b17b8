"""Placement of a linear layer's tiles when no streaming plan gives them (all weights fit):
a column split with K groups, for layers whose input is too wide for one scratchpad."""

from __future__ import annotations

from cimc.backend.builder.alloc import split_even
from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.lower.tiles import PlacedTile


def k_groups(
    b: ProgramBuilder, t: int, k: int, n: int, bits: int = 8
) -> tuple[PlacedTile, ...] | None:
    """Each output column block cut into g consecutive K groups, one (block, group) per
    core, with the fewest groups whose x columns (t rows) fit half a scratchpad; None when
    the cores are too few. Against a plain K split (every core a partner of every block)
    a core then works for one block only: its tile loads never wait behind the partial
    sums it receives as a home, and each block adds g - 1 partials instead of one per
    core."""
    rows, ncols = b.arch.macro.rows, b.arch.macro.cols * (8 // bits)
    ktiles, nblocks = -(-k // rows), -(-n // ncols)
    room = (b.arch.core.scratchpad_bytes - 2 * rows * ncols) // 2
    g = next((g for g in range(2, ktiles + 1) if t * -(-ktiles // g) * rows <= room), 0)
    if not g or nblocks * g > len(b.cores):
        return None
    slots = []
    for bi, n0 in enumerate(range(0, n, ncols)):
        for gi, (a, z) in enumerate(split_even(ktiles, g)):
            core = b.cores[bi * g + gi]
            for j, ki in enumerate(range(a, z)):
                k0, n1 = ki * rows, min(n, n0 + ncols)
                macro = j % b.arch.core.macros
                slots.append(PlacedTile.at(k0, min(k, k0 + rows), n0, n1, core, macro, bits=bits))
    return tuple(slots)
