"""What a node lowering sees: the builder, the views of the node's operands and result,
and the streaming setup (weight tile placements, macros left for run-time operands)."""

from __future__ import annotations

from typing import Protocol

from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.builder.values import decl_name, machine_dtype, rows_cols
from cimc.backend.lower.movement import materialize
from cimc.backend.plan.memory import MemoryPlan
from cimc.backend.plan.sparsity import SparsityPlan
from cimc.backend.stream.prefetch import StreamSetup
from cimc.ir.graph import Graph, Node
from cimc.machine.program import Space, View


class Values(Protocol):
    """Where the views of values come from: the whole batch's (ValueStore) or one
    micro-batch's rows of them (micro_store.MicroStore)."""

    def view(self, name: str) -> View: ...


class Emitter:
    """What a node lowering sees: the builder and the views of its operands and result."""

    def __init__(
        self,
        b: ProgramBuilder,
        store: Values,
        graph: Graph,
        stream: StreamSetup | None,
        memory: MemoryPlan | None = None,
        sparsity: SparsityPlan | None = None,
    ) -> None:
        self.b = b
        self.store = store
        self.graph = graph
        self.stream = stream
        self.memory = memory
        self.sparsity = sparsity
        # bundled FFNs: the down-projection's part of the shared record constant and cache,
        # declared by the up-projection's lowering (cimc/backend/lower/predicted_linear.py)
        self.bundled: dict[str, tuple[View, View]] = {}

    def operand(self, node: Node, k: int) -> View:
        return self.store.view(node.inputs[k])

    def result(self, node: Node) -> View:
        return self.store.view(node.name)

    def shape(self, node: Node, k: int) -> tuple[int, ...]:
        """The shape of operand k."""
        return self.graph.node(node.inputs[k]).type.shape

    def broadcast(self, node: Node, k: int, shape: tuple[int, ...]) -> View:
        """Operand k as a view that broadcasts to `shape` as 1xC, Rx1, 1x1 or RxC; any
        other broadcast is materialized with strided copies first."""
        s = self._padded(node, k, shape)
        if all(d == 1 for d in s[:-1]) or s[:-1] == shape[:-1]:
            return self.operand(node, k)
        return self.expanded(node, k, (*shape[:-1], s[-1]))

    def expanded(self, node: Node, k: int, shape: tuple[int, ...]) -> View:
        """Operand k broadcast to `shape` in a scratch region of its own."""
        r, c = rows_cols(shape)
        tmp = self.b.region(None, machine_dtype(self.graph.node(node.inputs[k])), r, c)
        materialize(self.b, self.operand(node, k), self._padded(node, k, shape), tmp, shape)
        return tmp

    def _padded(self, node: Node, k: int, shape: tuple[int, ...]) -> tuple[int, ...]:
        own = self.shape(node, k)
        return (1,) * (len(shape) - len(own)) + own

    def name(self, node: Node) -> str:
        """The constant-name prefix of a node (its weights become `NAME.w`, ...)."""
        return decl_name(node.name)

    def table_space(self, node: Node) -> Space:
        """Where the memory plan keeps a gathered table (an embedding's)."""
        flash = self.memory is not None and node.name in self.memory.flash_tables
        return "flash" if flash else "dram"

    def reserved_macros(self) -> tuple[int, ...]:
        """Macros the streaming plan left free for run-time operands (empty: any macro)."""
        return self.stream.reserved if self.stream is not None else ()
