"""MVMs of a linear layer with group-wise weight scales (cimc/quant/weight_groups.py).

acc[n] = sum over groups g of m[g, n] * (x[rows of g] @ codes[rows of g, n]): each tile is
cut at the group boundaries into row windows of its macro window; each window's MVM
(a fresh partial sum) is multiplied by its group's multipliers and added. A group split
between tiles or cores is two such windows: m * a + m * b = m * (a + b), exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from cimc.backend.builder.alloc import cols, sub
from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.lower.tiles import PlacedTile, TileLoader, mvm_opcode
from cimc.machine.program import View


@dataclass(frozen=True)
class GroupRows:
    size: int  # rows per group
    mult: View  # int32 [G x N] constant: the group multipliers


def segments(k0: int, k1: int, size: int) -> list[tuple[int, int]]:
    """Rows k0:k1 cut at the multiples of `size`."""
    out, a = [], k0
    while a < k1:
        z = min(k1, (a // size + 1) * size)
        out.append((a, z))
        a = z
    return out


def mvm_groups(
    b: ProgramBuilder,
    acc: View,
    tmp: View,
    x: View,
    kbase: int,
    part: Sequence[PlacedTile],
    loader: TileLoader,
    groups: GroupRows,
) -> None:
    """acc = the group-scaled sum over the tiles of one core in one column block; `tmp`
    (acc's shape) holds each window's partial sum."""
    core, n0 = loader.core, min(t.n0 for t in part)
    first = True
    for s in part:
        ref = loader.ensure(s)
        for a, z in segments(s.k0, s.k1, groups.size):
            window = replace(ref, r0=ref.r0 + a - s.k0, r1=ref.r0 + z - s.k0)
            dst = cols(acc if first else tmp, s.n0 - n0, s.n1 - n0)
            b.emit(core, mvm_opcode(s, False), dst, cols(x, a - kbase, z - kbase), window)
            with b.scratch(core) as sc:
                g = a // groups.size
                row = sc("i32", 1, s.n1 - s.n0)
                b.emit(core, "dma", row, sub(groups.mult, g, g + 1, s.n0, s.n1))
                b.emit(core, "mul", dst, dst, row)
            if not first:
                total = cols(acc, s.n0 - n0, s.n1 - n0)
                b.emit(core, "add", total, total, dst)
            first = False
