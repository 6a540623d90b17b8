"""The PyTorch integer golden: run a q-dialect graph, untiled, with the integer recipes.

    result = run_golden(qgraph, inputs)                 # result.outputs: integer codes
    real = dequantize_outputs(qgraph, result.outputs)   # codes * scale (float64)

Every q-op runs its recipe (cimc.quant.recipes, torch int64 on CPU); data movement and mask
logic run the canonical torch kernels on integer / bool tensors. The only float step is
the host-side `q.quantize` of float graph inputs (rint(x / scale) in float64, exact and
machine independent). Independent of the machine interpreter by design: nothing here
imports cimc.machine, so a kernel bug cannot hide in both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cimc.errors import CimcError
from cimc.ir.graph import Graph, Node
from cimc.ir.interpreter import GraphInterpreter
from cimc.ir.op_base import Op
from cimc.ir.ops import Constant
from cimc.ir.types import DType
from cimc.quant import constants as qc
from cimc.quant import recipes
from cimc.quant.dialect import (
    QAdd,
    QAttention,
    QConstant,
    QEmbedding,
    QLayerNorm,
    QLinear,
    QLut,
    QMaskedLinear,
    QMatMul,
    QMul,
    QOp,
    QQuantize,
    QRampLut,
    QReduce,
    QRequant,
    QRmsNorm,
    QRotary,
    QSoftmax,
    code_dtype,
)
from cimc.quant.quantize_rules import INTEGER_PASSTHROUGH
from cimc.quant.scales import DATA_MOVEMENT
from cimc.reference.kernels import KERNELS

Tensors = list[torch.Tensor]
QKernel = Callable[[Any, Tensors], torch.Tensor]


def host_quantize(op: QQuantize, x: np.ndarray) -> np.ndarray:
    """The host's side of a float graph input: clamp(rint(x / scale)) in float64 (exact).

    Whoever feeds the compiled program (verify, the CLI) must use this same function.
    """
    lo, hi = qc.qrange(op.bits)
    codes = np.clip(np.rint(np.asarray(x, np.float64) / op.scale), lo, hi)
    return codes.astype(code_dtype(op.bits).numpy)


def _quantize(op: QQuantize, args: Tensors) -> torch.Tensor:
    return torch.from_numpy(host_quantize(op, args[0].numpy()).astype(np.int64))


def _opt_mask(args: Tensors, k: int | None) -> torch.Tensor | None:
    return args[k] if k is not None and len(args) > k else None


Q_KERNELS: dict[type[Op], QKernel] = {
    QQuantize: _quantize,
    QConstant: lambda op, a: torch.from_numpy(op.value.astype(np.int64)),
    QRequant: lambda op, a: recipes.requant(a[0], op.plan),
    QLinear: lambda op, a: recipes.linear(a[0], op.plan),
    QMaskedLinear: lambda op, a: recipes.masked_linear(a[0], a[1], op.plan),
    QMatMul: lambda op, a: recipes.matmul(a[0], a[1], op.plan),
    QAdd: lambda op, a: recipes.add(a[0], a[1], op.plan),
    QMul: lambda op, a: recipes.mul(a[0], a[1], op.plan),
    QLut: lambda op, a: recipes.unary(a[0], op.plan),
    QRampLut: lambda op, a: recipes.ramp_unary(a[0], op.plan),
    QReduce: lambda op, a: recipes.reduce(a[0], op.plan, op.axes, op.keepdim),
    QEmbedding: lambda op, a: recipes.embedding(a[0], op.plan),
    QRotary: lambda op, a: recipes.rotary(a[0], op.plan),
    QSoftmax: lambda op, a: recipes.softmax(a[0], op.plan, _opt_mask(a, 1)),
    QAttention: lambda op, a: recipes.attention(
        a[0], a[1], a[2], op.plan, _opt_mask(a, op.mask_index(len(a))), a[-1] if op.bias else None
    ),
    QLayerNorm: lambda op, a: recipes.norm(a[0], op.plan),
    QRmsNorm: lambda op, a: recipes.norm(a[0], op.plan),
}

CANONICAL: tuple[type[Op], ...] = DATA_MOVEMENT + INTEGER_PASSTHROUGH


def _canonical(op: Op, args: Tensors) -> torch.Tensor:
    """Data movement and mask logic: the float reference's torch kernel on codes / bools."""
    return _to_torch(KERNELS[type(op)](op, args).contiguous().numpy())


GOLDEN_KERNELS: dict[type[Op], QKernel] = {**Q_KERNELS, **dict.fromkeys(CANONICAL, _canonical)}


@dataclass(frozen=True)
class GoldenResult:
    """Integer outputs by output name; every value by node name when requested."""

    outputs: dict[str, np.ndarray]
    values: dict[str, np.ndarray] = field(default_factory=dict)


class Golden(GraphInterpreter[torch.Tensor]):
    """Integer executor of one q-dialect graph (checked once, here).

    Values are int64 codes (the recipes' working type) or bools. Every input must be
    given: an integer or bool input in any integer or bool dtype whose values fit the
    declared one, a float input (which `q.quantize` turns into codes) in any numeric dtype.
    """

    ENGINE = "the integer golden"

    def __init__(self, graph: Graph) -> None:
        super().__init__(graph, GOLDEN_KERNELS)

    def run(self, inputs: Mapping[str, np.ndarray], keep_all: bool = False) -> GoldenResult:
        """Outputs by output name, and with `keep_all` every value by node name."""
        keep = {n.name for n in self.nodes} if keep_all else self.output_nodes()
        values = self.run_nodes(inputs, keep)
        return GoldenResult(self.outputs_of(values), values if keep_all else {})

    def unsupported(self, node: Node) -> str | None:
        op = node.op
        if type(op) in Q_KERNELS or (type(op) in self.kernels and not node.type.dtype.is_float):
            return None
        return f"{self.ENGINE} cannot run op {op.NAME} (quantize the graph first)"

    def accepts(self, given: np.dtype, declared: DType) -> bool:
        return given.kind in ("fiu" if declared.is_float else "iub")

    def feed(self, node: Node, array: np.ndarray) -> torch.Tensor:
        if node.type.dtype.is_float:
            return torch.from_numpy(array.astype(np.float32))
        return _to_torch(array.astype(node.type.dtype.numpy))

    def constant(self, node: Node) -> torch.Tensor:
        assert isinstance(node.op, Constant)
        return _to_torch(node.op.value)

    def check_value(self, node: Node, value: torch.Tensor) -> None:
        """Codes must fit the declared type: a quantizer bug otherwise, never silent."""
        if node.type.dtype.is_int and value.numel():
            info = np.iinfo(node.type.dtype.numpy)
            if int(value.min()) < info.min or int(value.max()) > info.max:
                raise CimcError(f"golden codes do not fit {node.type.dtype}", node.where)

    def export(self, node: Node, value: torch.Tensor) -> np.ndarray:
        return value.numpy().astype(node.type.dtype.numpy)


def run_golden(
    graph: Graph, inputs: Mapping[str, np.ndarray], keep_all: bool = False
) -> GoldenResult:
    """Run the quantized `graph` on `inputs` (the float model's inputs; bool masks allowed)."""
    return Golden(graph).run(inputs, keep_all)


def _to_torch(array: np.ndarray) -> torch.Tensor:
    """Integers as int64 (the recipes' working type), bools as bool."""
    a = np.asarray(array)
    return torch.from_numpy(a.astype(bool if a.dtype == bool else np.int64))


# ---- scales and dequantization ----------------------------------------------------------


def value_scales(graph: Graph) -> dict[str, float]:
    """Scale of every value holding codes: a q-op's own, or its source's through data moves."""
    scales: dict[str, float] = {}
    for node in graph.nodes():
        if isinstance(node.op, QOp):
            scales[node.name] = node.op.scale
        elif isinstance(node.op, DATA_MOVEMENT) and node.inputs and node.inputs[0] in scales:
            scales[node.name] = scales[node.inputs[0]]
    return scales


def output_scales(graph: Graph) -> dict[str, float | None]:
    """Scale of each graph output (None for outputs that are not codes, e.g. ids)."""
    scales = value_scales(graph)
    return {out: scales.get(name) for out, name in graph.outputs}


def dequantize_outputs(graph: Graph, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """codes * scale (float64) for every output that holds codes; others as given."""
    scales = output_scales(graph)
    result = {}
    for out, value in outputs.items():
        scale = scales[out]
        result[out] = value if scale is None else value.astype(np.float64) * scale
    return result
