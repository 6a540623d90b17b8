"""Run a canonical graph in float32 with torch: the accuracy reference of cimc.

    outputs = run_graph(graph, inputs)                 # {output name: np.ndarray}
    values = FloatModel(graph).run_all(inputs)          # {node name: np.ndarray}, every node

Missing inputs are generated from their meaning (see `default_inputs`).
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Mapping, Sequence

import numpy as np
import torch

from cimc.errors import CimcError
from cimc.ir.graph import Graph, Node
from cimc.ir.op_base import Op
from cimc.ir.ops import (
    Cast,
    Concat,
    Constant,
    Embedding,
    Expand,
    Gather,
    Input,
    Reshape,
    Slice,
    Transpose,
)
from cimc.ir.types import DType, TensorType
from cimc.reference.kernels import KERNELS, Kernel

# Ops a token-id input may flow through on its way to the embedding that fixes the vocab.
_ID_PLUMBING = (Cast, Concat, Expand, Gather, Reshape, Slice, Transpose)


def register_kernel(op_class: type[Op], kernel: Kernel) -> None:
    """Add the float kernel of an op defined outside cimc.ir.ops (e.g. a later dialect)."""
    KERNELS[op_class] = kernel


def has_kernel(op: Op) -> bool:
    """Whether the float reference can execute `op`."""
    return type(op) in KERNELS


def evaluate_op(op: Op, operands: Sequence[np.ndarray], where: str = "") -> np.ndarray:
    """Run one op's kernel on numpy operands (used by constant folding)."""
    tensors = [torch.from_numpy(np.array(a)) for a in operands]  # writable copies
    return _to_numpy(_kernel_call(op, tensors, where or op.NAME))


class FloatModel:
    """A float32 executor of one graph (the graph is verified once, here)."""

    def __init__(self, graph: Graph) -> None:
        graph.verify()
        self.graph = graph
        self.nodes = graph.nodes()
        for node in self.nodes:
            if not isinstance(node.op, Input | Constant) and type(node.op) not in KERNELS:
                raise CimcError(
                    f"the float reference has no kernel for op {node.op.NAME}", node.where
                )
        self._constants = {name: _shared_tensor(value) for name, value in graph.constants().items()}

    def run(self, inputs: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Graph outputs by output name; intermediates are freed after their last use."""
        values = self._run(inputs, {node for _, node in self.graph.outputs})
        return {out: values[name] for out, name in self.graph.outputs}

    def run_all(
        self, inputs: Mapping[str, np.ndarray] | None = None, names: Collection[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Node values by node name in topological order: all of them, or only `names`.

        This is what per-layer accuracy needs; pass `names` on big models to bound memory.
        """
        if names is not None:
            for name in sorted(set(names)):
                self.graph.node(name)  # an unknown name is an error, not an empty result
        keep = set(names) if names is not None else {n.name for n in self.nodes}
        return self._run(inputs, keep)

    def _run(
        self, inputs: Mapping[str, np.ndarray] | None, keep: set[str]
    ) -> dict[str, np.ndarray]:
        last_use = {operand: k for k, node in enumerate(self.nodes) for operand in node.inputs}
        values: dict[str, torch.Tensor] = {}
        kept: dict[str, np.ndarray] = {}
        feeds = self._feeds(inputs)
        for k, node in enumerate(self.nodes):
            values[node.name] = self._execute(node, values, feeds)
            if node.name in keep:
                kept[node.name] = _to_numpy(values[node.name])
            for operand in set(node.inputs):
                if last_use[operand] == k:
                    del values[operand]  # free intermediates early: big models stay in memory
        return kept

    def _execute(
        self, node: Node, values: Mapping[str, torch.Tensor], feeds: Mapping[str, np.ndarray]
    ) -> torch.Tensor:
        if isinstance(node.op, Input):
            return torch.from_numpy(np.array(feeds[node.name]))
        if isinstance(node.op, Constant):
            return self._constants[node.name]
        result = _kernel_call(node.op, [values[i] for i in node.inputs], node.where)
        if tuple(result.shape) != node.type.shape:
            raise CimcError(
                f"kernel gave shape {list(result.shape)}, expected {node.type}", node.where
            )
        return result

    def _feeds(self, inputs: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        given = dict(inputs or {})
        known = {n.name for n in self.graph.input_nodes()}
        for name in sorted(given):
            if name not in known:
                raise CimcError(f"graph has no input '{name}' (inputs: {', '.join(sorted(known))})")
        missing = [n.name for n in self.graph.input_nodes() if n.name not in given]
        if missing:
            given.update(default_inputs(self.graph, only=missing))
        for node in self.graph.input_nodes():
            given[node.name] = _check_feed(node, given[node.name])
        return given


def run_graph(
    graph: Graph, inputs: Mapping[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Execute `graph` in float32; returns outputs by output name."""
    return FloatModel(graph).run(inputs)


def default_inputs(
    graph: Graph,
    *,
    seed: int = 0,
    vocab_size: int | None = None,
    only: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Inputs generated by meaning: token ids in [0, vocab), masks of ones, positions 0..S-1.

    The vocab is the smallest embedding table the ids reach; `vocab_size` bounds it
    further (or gives it when no embedding consumes the ids).
    """
    rng = np.random.default_rng(seed)
    result: dict[str, np.ndarray] = {}
    for node in graph.input_nodes():
        if only is not None and node.name not in only:
            continue
        result[node.name] = _default_input(graph, node, rng, vocab_size)
    return result


def _default_input(
    graph: Graph, node: Node, rng: np.random.Generator, vocab_size: int | None
) -> np.ndarray:
    assert isinstance(node.op, Input)
    t, meaning = node.type, node.op.meaning
    if meaning == "token_ids":
        vocab = _vocab_bound(graph, node.name, vocab_size)
        return rng.integers(0, vocab, size=t.shape).astype(t.dtype.numpy)
    if meaning == "attention_mask":
        return np.ones(t.shape, t.dtype.numpy)
    if meaning == "position_ids":
        positions = np.arange(t.shape[-1] if t.shape else 1)
        return np.broadcast_to(positions, t.shape).astype(t.dtype.numpy)
    if meaning == "token_type_ids":
        return np.zeros(t.shape, t.dtype.numpy)
    return _random_of_type(rng, t)


def _random_of_type(rng: np.random.Generator, t: TensorType) -> np.ndarray:
    if t.dtype.is_float:
        return rng.standard_normal(t.shape).astype(np.float32)
    if t.dtype is DType.BOOL:
        return rng.random(t.shape) < 0.5
    return rng.integers(0, 2, size=t.shape).astype(t.dtype.numpy)


def _vocab_bound(graph: Graph, name: str, vocab_size: int | None) -> int:
    tables = _embedding_rows(graph, name)
    bounds = tables + ([vocab_size] if vocab_size is not None else [])
    if not bounds:
        raise CimcError(
            "no embedding consumes these token ids: give a vocab size for default inputs",
            f"input %{name}",
        )
    return min(bounds)


def _embedding_rows(graph: Graph, name: str) -> list[int]:
    """Row counts of the embedding tables reached from `name` through id plumbing."""
    rows: list[int] = []
    frontier, seen = [name], {name}
    while frontier:
        current = frontier.pop()
        for user in graph.users(current):
            node = graph.node(user)
            if isinstance(node.op, Embedding) and node.inputs[0] == current:
                rows.append(graph.node(node.inputs[1]).type.shape[0])
            elif isinstance(node.op, _ID_PLUMBING) and user not in seen:
                seen.add(user)
                frontier.append(user)
    return rows


def _check_feed(node: Node, value: np.ndarray) -> np.ndarray:
    array = np.asarray(value)
    if array.shape != node.type.shape or array.dtype != node.type.dtype.numpy:
        raise CimcError(
            f"input is {array.dtype}{list(array.shape)}, expected {node.type}",
            f"input %{node.name}",
        )
    return array


def _kernel_call(op: Op, tensors: list[torch.Tensor], where: str) -> torch.Tensor:
    kernel = KERNELS.get(type(op))
    if kernel is None:
        raise CimcError(f"the float reference has no kernel for op {op.NAME}", where)
    try:
        with torch.no_grad():
            # Contiguous results make every kernel's numerics independent of how its
            # operands were produced (a folded weight and a transposed view then agree).
            return kernel(op, tensors).contiguous()
    except (RuntimeError, ValueError, IndexError) as e:
        raise CimcError(f"{op.NAME} failed in the float reference: {e}", where) from None


def _shared_tensor(value: np.ndarray) -> torch.Tensor:
    """A tensor viewing a read-only constant without copying (kernels never write in place)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch warns about non-writable arrays
        return torch.from_numpy(value)


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    # A copy: a result may view a constant (reshape of a weight), which callers must not edit.
    return t.detach().numpy().copy()
