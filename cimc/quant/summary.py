"""One line on the precision a quantized graph chose, for the compile summary."""

from __future__ import annotations

from cimc.ir.graph import Graph
from cimc.ir.types import DType
from cimc.quant.dialect import QOp, QRampLut, QRequant


def recipe_summary(graph: Graph) -> str:
    """int16 values among the q-ops' results, per-channel requants (outlier smoothing or
    a scale by a constant vector) and activations computed as ramp + table."""
    qops = [n for n in graph.nodes() if isinstance(n.op, QOp)]
    wide = sum(1 for n in qops if n.type.dtype is DType.I16)
    per_channel = sum(1 for n in qops if isinstance(n.op, QRequant) and n.op.plan.mult.ndim == 1)
    ramps = sum(1 for n in qops if isinstance(n.op, QRampLut))
    return (
        f"quantized: {wide} of {len(qops)} values in int16, {per_channel} per-channel "
        f"requants (outlier smoothing), {ramps} GELU/SiLU as relu + table of int16"
    )
