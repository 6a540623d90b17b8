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
from cimc.ir.op_base import Op
from cimc.ir.ops import Constant, Input
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
    QMatMul,
    QMul,
    QOp,
    QQuantize,
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


def _opt_mask(args: Tensors, k: int) -> torch.Tensor | None:
    return args[k] if len(args) > k else None


Q_KERNELS: dict[type[QOp], QKernel] = {
    QQuantize: _quantize,
    QConstant: lambda op, a: torch.from_numpy(op.value.astype(np.int64)),
    QRequant: lambda op, a: recipes.requant(a[0], op.plan),
    QLinear: lambda op, a: recipes.linear(a[0], op.plan),
    QMatMul: lambda op, a: recipes.matmul(a[0], a[1], op.plan),
    QAdd: lambda op, a: recipes.add(a[0], a[1], op.plan),
    QMul: lambda op, a: recipes.mul(a[0], a[1], op.plan),
    QLut: lambda op, a: recipes.unary(a[0], op.plan),
    QReduce: lambda op, a: recipes.reduce(a[0], op.plan, op.axes, op.keepdim),
    QEmbedding: lambda op, a: recipes.embedding(a[0], op.plan),
    QRotary: lambda op, a: recipes.rotary(a[0], op.plan),
    QSoftmax: lambda op, a: recipes.softmax(a[0], op.plan, _opt_mask(a, 1)),
    QAttention: lambda op, a: recipes.attention(a[0], a[1], a[2], op.plan, _opt_mask(a, 3)),
    QLayerNorm: lambda op, a: recipes.norm(a[0], op.plan),
    QRmsNorm: lambda op, a: recipes.norm(a[0], op.plan),
}

CANONICAL: tuple[type[Op], ...] = DATA_MOVEMENT + INTEGER_PASSTHROUGH


@dataclass(frozen=True)
class GoldenResult:
    """Integer outputs by output name; every value by node name when requested."""

    outputs: dict[str, np.ndarray]
    values: dict[str, np.ndarray] = field(default_factory=dict)


class Golden:
    """Integer executor of one q-dialect graph (checked once, here)."""

    def __init__(self, graph: Graph) -> None:
        graph.verify()
        self.graph = graph
        self.nodes = graph.nodes()
        for node in self.nodes:
            if isinstance(node.op, Input | Constant) or type(node.op) in Q_KERNELS:
                continue
            if not isinstance(node.op, CANONICAL) or node.type.dtype.is_float:
                raise CimcError(
                    f"the integer golden cannot run op {node.op.NAME} (quantize the graph first)",
                    node.where,
                )

    def run(self, inputs: Mapping[str, np.ndarray], keep_all: bool = False) -> GoldenResult:
        feeds = self._feeds(inputs)
        values: dict[str, torch.Tensor] = {}
        for node in self.nodes:
            values[node.name] = self._execute(node, values, feeds)
        outputs = {
            out: _to_numpy(values[name], self.graph.node(name)) for out, name in self.graph.outputs
        }
        kept = {n.name: _to_numpy(values[n.name], n) for n in self.nodes} if keep_all else {}
        return GoldenResult(outputs, kept)

    def _execute(
        self, node: Node, values: Mapping[str, torch.Tensor], feeds: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        if isinstance(node.op, Input):
            return feeds[node.name]
        if isinstance(node.op, Constant):
            return _to_torch(node.op.value)
        args = [values[i] for i in node.inputs]
        try:
            if isinstance(node.op, QOp):
                result = Q_KERNELS[type(node.op)](node.op, args)
            else:
                result = _to_torch(KERNELS[type(node.op)](node.op, args).contiguous().numpy())
        except (ValueError, RuntimeError, IndexError) as e:
            raise CimcError(
                f"{node.op.NAME} failed in the integer golden: {e}", node.where
            ) from None
        except CimcError as e:
            raise CimcError(e.message, node.where) from None
        _check_result(node, result)
        return result

    def _feeds(self, inputs: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        known = [n.name for n in self.graph.input_nodes()]
        unknown = sorted(set(inputs) - set(known))
        missing = [n for n in known if n not in inputs]
        if unknown or missing:
            raise CimcError(
                f"golden inputs: missing {missing or 'none'}, unknown {unknown or 'none'} "
                f"(graph inputs: {', '.join(known)})"
            )
        return {n.name: _feed(n, inputs[n.name]) for n in self.graph.input_nodes()}


def run_golden(
    graph: Graph, inputs: Mapping[str, np.ndarray], keep_all: bool = False
) -> GoldenResult:
    """Run the quantized `graph` on `inputs` (the float model's inputs; bool masks allowed)."""
    return Golden(graph).run(inputs, keep_all)


def _feed(node: Node, value: np.ndarray) -> torch.Tensor:
    array = np.asarray(value)
    t = node.type
    if array.shape != t.shape:
        raise CimcError(f"input has shape {list(array.shape)}, expected {t}", f"input %{node.name}")
    if t.dtype.is_float:
        if array.dtype.kind not in "fiu":
            raise CimcError(f"input is {array.dtype}, expected {t}", f"input %{node.name}")
        return torch.from_numpy(array.astype(np.float32))
    if array.dtype.kind not in "iub":
        raise CimcError(f"input is {array.dtype}, expected {t}", f"input %{node.name}")
    if t.dtype.is_int:
        info = np.iinfo(t.dtype.numpy)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise CimcError(f"input values do not fit {t.dtype}", f"input %{node.name}")
    return _to_torch(array.astype(t.dtype.numpy))


def _to_torch(array: np.ndarray) -> torch.Tensor:
    """Integers as int64 (the recipes' working type), bools as bool."""
    a = np.asarray(array)
    return torch.from_numpy(a.astype(bool if a.dtype == bool else np.int64))


def _check_result(node: Node, result: torch.Tensor) -> None:
    """The value must fit the declared type: a quantizer bug otherwise, never silent."""
    if tuple(result.shape) != node.type.shape:
        raise CimcError(f"golden gave shape {list(result.shape)}, expected {node.type}", node.where)
    if node.type.dtype.is_int and result.numel():
        info = np.iinfo(node.type.dtype.numpy)
        if int(result.min()) < info.min or int(result.max()) > info.max:
            raise CimcError(f"golden codes do not fit {node.type.dtype}", node.where)


def _to_numpy(t: torch.Tensor, node: Node) -> np.ndarray:
    return t.numpy().astype(node.type.dtype.numpy)


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
