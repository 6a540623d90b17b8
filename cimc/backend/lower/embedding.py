"""Lowering of embedding lookup (cimc/quant/recipes.py `embedding`): y = T[ids].

The table is stored pre-quantized at the output scale, so the lookup is pure data
movement: ids are copied into the scratchpad and one `gather` per row chunk reads the
table rows straight from dram/flash (a token id outside the table is a run-time error of
`gather`, as the recipe raises on it).
"""

from __future__ import annotations

from cimc.backend.builder.alloc import reshape, sub
from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.lower.common import check_shape, row_chunk, row_work
from cimc.errors import CimcError
from cimc.machine.program import DTYPE_BYTES, Space, View
from cimc.quant.plans import EmbeddingPlan


def lower_embedding(
    b: ProgramBuilder,
    ids: View,
    y: View,
    plan: EmbeddingPlan,
    table_space: Space = "dram",
    name: str | None = None,
) -> None:
    """y[n x D] = table[ids] with ids any contiguous integer view of n elements."""
    vocab, dim = plan.table.shape
    n = ids.rows * ids.cols
    if ids.cols != 1:
        if ids.rows > 1 and ids.stride != ids.cols:
            raise CimcError("embedding ids must be a contiguous view", b.loc)
        ids = reshape(ids, n, 1)
    check_shape(y, (n, dim), "embedding output", b.loc)
    if vocab < 1:
        raise CimcError("embedding table is empty", b.loc)
    table = b.const(name or b.fresh_name("embed"), plan.table, y.dtype, table_space)
    gather_rows(b, ids, y, table)


def gather_rows(b: ProgramBuilder, ids: View, y: View, table: View) -> None:
    """y[n x D] = table[ids] for a declared [V x D] table (ids: n elements, contiguous)."""
    n, dim = y.rows, y.cols
    if ids.cols != 1:
        if ids.rows > 1 and ids.stride != ids.cols:
            raise CimcError("embedding ids must be a contiguous view", b.loc)
        ids = reshape(ids, ids.rows * ids.cols, 1)
    per_row = DTYPE_BYTES[ids.dtype] + DTYPE_BYTES[y.dtype] * dim
    chunk = row_chunk(b, b.cores, per_row, 0, 2)
    for core, r0, r1 in row_work(n, b.cores, chunk):
        with b.scratch(core) as sc:
            idx, out = sc(ids.dtype, r1 - r0, 1), sc(y.dtype, r1 - r0, dim)
            b.emit(core, "dma", idx, sub(ids, r0, r1))
            b.emit(core, "gather", out, table, idx)
            b.emit(core, "dma", sub(y, r0, r1), out)
