"""The graph interpreter base: one node walk for every executor of a graph.

In the spirit of torch.fx's `Interpreter`: `run_nodes(inputs, keep)` checks the inputs,
walks the graph in topological order with an environment of values, `run_node` dispatches
by op (inputs are fed, constants supplied, every other op runs its kernel from the
executor's table), each result is checked against the node's type, and any failure names
the node being executed. Intermediates are freed after their last use, so big models run
in bounded memory.

A subclass is one executor (the float reference, the integer golden); it supplies:

    ENGINE              how messages name it ("the float reference")
    kernels             op class -> kernel(op, operands) -> value (`call_kernel` runs one)
    unsupported(node)   why a node cannot run (None when it can; checked once, up front)
    accepts(given, t)   which numpy dtypes an input of dtype t may be given in
    feed(node, array)   the value of a checked input
    constant(node)      the value of a Constant node
    check_value(n, v)   what the result type demands beyond its shape (dtype, range)
    export(node, v)     a kept value as a numpy array the caller owns
    missing_inputs(ns)  values for inputs not given (default: an error)

Values are whatever the kernels compute on (torch tensors for both executors today); the
base only reads their `shape`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np

from cimc.errors import CimcError
from cimc.ir.graph import Graph, Node
from cimc.ir.op_base import Op
from cimc.ir.ops_tensor import Constant, Input
from cimc.ir.types import DType

# What a kernel may raise for bad data (ids out of range, a failed torch call): a located
# CimcError. Anything else is a bug and keeps its traceback, with the node in a note.
KERNEL_ERRORS = (ValueError, RuntimeError, IndexError)


class Value(Protocol):
    @property
    def shape(self) -> Sequence[int]: ...


V = TypeVar("V", bound=Value)
OpKernel = Callable[[Any, list[V]], V]


def kernel_failure(e: Exception, op_name: str, engine: str, where: str) -> Exception:
    """What to raise for `e`, met running op `op_name` at `where` (the node executed): bad
    data as a CimcError located there, a bug as itself with the node in a note."""
    if isinstance(e, CimcError):
        return CimcError(e.message, where)
    if isinstance(e, KERNEL_ERRORS):
        return CimcError(f"{op_name} failed in {engine}: {e}", where)
    e.add_note(f"while executing {where} ({op_name}) in {engine}")
    return e


class GraphInterpreter(Generic[V]):
    """Runs one graph (verified, and checked to be runnable, once here)."""

    ENGINE: ClassVar[str] = "the graph interpreter"

    def __init__(self, graph: Graph, kernels: Mapping[type, OpKernel[V]]) -> None:
        graph.verify()
        self.graph = graph
        self.kernels = kernels
        self.nodes = graph.nodes()
        self.input_nodes = graph.input_nodes()
        for node in self.nodes:
            reason = None if _is_leaf(node) else self.unsupported(node)
            if reason is not None:
                raise CimcError(reason, node.where)
        self._dead_after = _last_uses(self.nodes)

    # ---- running --------------------------------------------------------------------

    def run_nodes(
        self,
        inputs: Mapping[str, np.ndarray] | None,
        keep: Collection[str],
        visit: Callable[[Node, Mapping[str, V]], None] | None = None,
    ) -> dict[str, np.ndarray]:
        """Values of the nodes named in `keep`, by node name in topological order.
        `visit(node, env)` sees every node's value (and its operands') as soon as it is
        computed, before anything is freed: a statistic over every value needs no copy."""
        feeds = self._feeds(inputs)
        env: dict[str, V] = {}
        kept: dict[str, np.ndarray] = {}
        for node, dead in zip(self.nodes, self._dead_after, strict=True):
            env[node.name] = self.run_node(node, env, feeds)
            if visit is not None:
                visit(node, env)
            if node.name in keep:
                kept[node.name] = self.export(node, env[node.name])
            for operand in dead:
                del env[operand]
        return kept

    def run_node(self, node: Node, env: Mapping[str, V], feeds: Mapping[str, V]) -> V:
        """The value of `node`: fed, constant, or its kernel's checked result."""
        if isinstance(node.op, Input):
            return feeds[node.name]
        if isinstance(node.op, Constant):
            return self.constant(node)
        args = [env[name] for name in node.inputs]
        try:  # not a context manager: this runs once per node
            value = self.call_kernel(node.op, args)
        except Exception as e:
            raise kernel_failure(e, node.op.NAME, self.ENGINE, node.where) from None
        self._check_result(node, value)
        return value

    def outputs_of(self, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Graph outputs by output name, from node values that include every output node."""
        return {out: values[name] for out, name in self.graph.outputs}

    def output_nodes(self) -> set[str]:
        return {name for _, name in self.graph.outputs}

    # ---- checks ---------------------------------------------------------------------

    def _feeds(self, inputs: Mapping[str, np.ndarray] | None) -> dict[str, V]:
        given = dict(inputs or {})
        known = [n.name for n in self.input_nodes]
        for name in sorted(given):
            if name not in known:
                raise CimcError(f"graph has no input '{name}' (inputs: {', '.join(sorted(known))})")
        missing = [name for name in known if name not in given]
        if missing:
            given.update(self.missing_inputs(missing))
        return {n.name: self.feed(n, self._check_input(n, given[n.name])) for n in self.input_nodes}

    def _check_input(self, node: Node, value: np.ndarray) -> np.ndarray:
        array, t = np.asarray(value), node.type
        if array.shape != t.shape or not self.accepts(array.dtype, t.dtype):
            raise CimcError(
                f"input is {array.dtype}{list(array.shape)}, expected {t}", f"input %{node.name}"
            )
        if array.dtype != t.dtype.numpy and t.dtype.is_int and not _fits(array, t.dtype):
            raise CimcError(f"input values do not fit {t.dtype}", f"input %{node.name}")
        return array

    def _check_result(self, node: Node, value: V) -> None:
        """A result must have its node's type: a bug in a kernel or a type rule otherwise."""
        if tuple(value.shape) != node.type.shape:
            raise CimcError(
                f"{self.ENGINE} gave shape {list(value.shape)}, expected {node.type}", node.where
            )
        self.check_value(node, value)

    # ---- what an executor supplies --------------------------------------------------

    def unsupported(self, node: Node) -> str | None:
        if type(node.op) in self.kernels:
            return None
        return f"{self.ENGINE} has no kernel for op {node.op.NAME}"

    def call_kernel(self, op: Op, args: list[V]) -> V:
        """Run the kernel of `op` (executors may wrap the call, e.g. in torch.no_grad)."""
        return self.kernels[type(op)](op, args)

    def accepts(self, given: np.dtype, declared: DType) -> bool:
        """Whether an input declared `declared` may be given as `given` (default: exactly)."""
        return given == declared.numpy

    def missing_inputs(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        known = ", ".join(n.name for n in self.input_nodes)
        raise CimcError(f"inputs missing {list(names)}: give every graph input ({known})")

    def feed(self, node: Node, array: np.ndarray) -> V:
        raise NotImplementedError

    def constant(self, node: Node) -> V:
        raise NotImplementedError

    def check_value(self, node: Node, value: V) -> None:
        """Checks of `value` against `node.type` beyond its shape (default: none)."""

    def export(self, node: Node, value: V) -> np.ndarray:
        raise NotImplementedError


def _is_leaf(node: Node) -> bool:
    return isinstance(node.op, Input | Constant)


def _last_uses(nodes: Sequence[Node]) -> list[tuple[str, ...]]:
    """For each step, the operands no later step reads (graph outputs are kept by `keep`)."""
    last = {operand: k for k, node in enumerate(nodes) for operand in node.inputs}
    dead: list[list[str]] = [[] for _ in nodes]
    for operand, k in last.items():
        dead[k].append(operand)
    return [tuple(names) for names in dead]


def _fits(array: np.ndarray, dtype: DType) -> bool:
    info = np.iinfo(dtype.numpy)
    return not array.size or bool(array.min() >= info.min and array.max() <= info.max)
