"""The error each q-op makes on its own: its recipe run on exact inputs.

A value's cosine against float mixes what it inherits from its inputs with what its own
recipe loses. Feeding each q-op the float values of its operands, quantized at the scales
the operands have in the integer model, isolates the second part:

    local = own_outputs(qgraph, golden, floats, names)     # codes, by value name

Operands the quantizer inserted (requantized copies, smoothing, host quantization) have
no float counterpart: they run their own kernels on exact inputs in turn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from cimc.ir.graph import Graph
from cimc.ir.ops import Constant, Input
from cimc.quant import constants as qc
from cimc.quant.golden import Golden


class OwnOutputs:
    """Codes of values computed by their own q-op from exactly quantized operands."""

    def __init__(self, golden: Golden, scales: Mapping[str, float]) -> None:
        self.golden = golden
        self.graph: Graph = golden.graph
        self.scales = scales

    def run(self, floats: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
        memo: dict[str, torch.Tensor] = {}
        own = {}
        for name in names:
            node = self.graph.node(name)
            if isinstance(node.op, Input | Constant):
                continue
            args = [self._exact(i, floats, memo) for i in node.inputs]
            own[name] = self.golden.call_kernel(node.op, args).numpy()
        return own

    def _exact(
        self, name: str, floats: Mapping[str, np.ndarray], memo: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        if name in memo:
            return memo[name]
        node = self.graph.node(name)
        if name in floats and name in self.scales and node.type.dtype.is_int:
            bits = 8 if node.type.dtype.numpy == np.int8 else 16
            lo, hi = qc.qrange(bits)
            codes = np.clip(
                np.rint(np.asarray(floats[name], np.float64) / self.scales[name]), lo, hi
            )
            value = torch.from_numpy(codes.astype(np.int64))
        elif isinstance(node.op, Input):
            value = self.golden.feed(node, np.asarray(floats[name]))
        elif isinstance(node.op, Constant):
            value = self.golden.constant(node)
        else:
            args = [self._exact(i, floats, memo) for i in node.inputs]
            value = self.golden.call_kernel(node.op, args)
        memo[name] = value
        return value
