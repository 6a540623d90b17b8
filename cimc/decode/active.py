"""Active-neuron fractions of a run's sparse layers (cimc/backend/plan/sparsity.py).

A sparse layer packs its inputs by the index column `nzidx` built (one `gather.m` over
all K input columns per core); the run records that column (cimc/machine/dynamic.py), so
its share of named rows is the share of input columns (FFN neurons) that were non-zero
in some token of the run: the fraction of the layer's weight rows the run loaded.
A masked layer (`--sparsity predict`) gathers the columns of the neurons its predictor
named, each tile its own range by neuron number (`predicted_fractions`: their union).
A windowed layer (`--window K`) also records the rows its `dma.m` copied from flash into
its DRAM cache: the neurons active now and not in the last K runs (`copied_fractions`).
"""

from __future__ import annotations

from cimc.backend.builder.compiled import Compiled
from cimc.machine.dynamic import Dynamic, valid_count
from cimc.machine.program import Program
from cimc.quant.dialect import QLinear, QMaskedLinear


def active_fractions(compiled: Compiled, program: Program, dynamic: Dynamic) -> dict[str, float]:
    """Sparse layer (graph node name) -> share of its input columns active in the run."""
    widths = {
        n.name: int(n.op.plan.weight.shape[0])
        for n in compiled.graph.nodes()
        if isinstance(n.op, QLinear) and not isinstance(n.op, QMaskedLinear)  # predicted_fractions
    }
    shares: dict[str, float] = {}
    streams = {s.core: s.instrs for s in program.cores}
    for (core, pc), index in sorted(dynamic.items()):
        instr = streams[core][pc]
        layer = compiled.comments.get(instr.comment or "")
        if instr.opcode != "gather.m" or layer not in widths or index.size != widths[layer]:
            continue
        shares[layer] = valid_count(index, index.size) / index.size
    return dict(sorted(shares.items()))


def copied_fractions(compiled: Compiled, program: Program, dynamic: Dynamic) -> dict[str, float]:
    """Windowed layer (graph node name) -> share of its rows the run copied from flash."""
    shares: dict[str, float] = {}
    streams = {s.core: s.instrs for s in program.cores}
    for (core, pc), index in sorted(dynamic.items()):
        instr = streams[core][pc]
        layer = compiled.comments.get(instr.comment or "")
        if instr.opcode == "dma.m" and layer is not None and index.size:
            shares[layer] = valid_count(index, index.size) / index.size
    return dict(sorted(shares.items()))


def predicted_fractions(compiled: Compiled, program: Program, dynamic: Dynamic) -> dict[str, float]:
    """Masked layer (graph node name) -> share of its neurons whose columns the run loaded."""
    named: dict[str, set[int]] = {}
    widths = {
        n.name: int(n.op.plan.weight.shape[1])
        for n in compiled.graph.nodes()
        if isinstance(n.op, QMaskedLinear)
    }
    streams = {s.core: s.instrs for s in program.cores}
    for (core, pc), index in sorted(dynamic.items()):
        instr = streams[core][pc]
        layer = compiled.comments.get(instr.comment or "")
        if instr.opcode == "gather.m" and layer in widths:
            named.setdefault(layer, set()).update(int(i) for i in index[index >= 0])
    return {layer: len(named[layer]) / widths[layer] for layer in sorted(named)}
