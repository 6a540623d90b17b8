"""The graph IR: typed nodes over a networkx DiGraph (the only module importing networkx).

Every node produces one value named by the node's name. Iteration is topological with ties
broken by insertion order, so printing and passes are deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np

from cimc.errors import CimcError
from cimc.ir.op_base import Op, OpTypeError
from cimc.ir.ops_tensor import Constant, Input
from cimc.ir.types import TensorType


@dataclass(frozen=True)
class Node:
    """One op application. `inputs` name the producing nodes in operand order."""

    name: str
    op: Op
    inputs: tuple[str, ...]
    type: TensorType
    loc: str = ""

    @property
    def where(self) -> str:
        """How errors name this node: ``%name`` plus its source location when known."""
        return node_location(self.name, self.loc)


def node_location(name: str, loc: str = "") -> str:
    return f"%{name} ({loc})" if loc else f"%{name}"


class Graph:
    """A canonical graph: inputs, constants and op nodes, plus an ordered output list."""

    def __init__(self, name: str = "main") -> None:
        self.name = name
        self._g = nx.DiGraph()  # edges producer -> user: topological order, users, cycles
        self._nodes: dict[str, Node] = {}  # name -> Node, in insertion order
        self._seq: dict[str, int] = {}  # insertion order, the topological tie-breaker
        self._next_seq = 0
        self._suffix: dict[str, int] = {}
        self._outputs: list[tuple[str, str]] = []
        self._order: list[str] | None = None  # cached topological order

    # ---- building -------------------------------------------------------------------

    def add_input(self, name: str, type: TensorType, meaning: str = "float", loc: str = "") -> str:
        """Add a graph input called `name` (kept as is: callers feed inputs by this name)."""
        if name in self._seq:
            raise CimcError(f"graph input name '{name}' is already used", loc or None)
        return self.add_node(Input(type, meaning), (), name=name, loc=loc)

    def add_constant(self, value: np.ndarray, name: str | None = None, loc: str = "") -> str:
        """Add a constant (weights...); the array is shared read-only, not copied."""
        return self.add_node(Constant(np.asarray(value)), (), name=name or "const", loc=loc)

    def add_node(
        self, op: Op, inputs: Sequence[str], name: str | None = None, loc: str = ""
    ) -> str:
        """Add `op` applied to the named values; returns the new node's (uniquified) name.

        The op is normalized (negative axes made positive, reshape -1 resolved...) and the
        result type inferred; a bad operand raises a CimcError located at the node.
        """
        name = self.unique_name(name or op.NAME)
        inputs = tuple(inputs)
        for i in inputs:
            if i not in self._seq:
                raise CimcError(
                    f"operand %{i} of {op.NAME} is not defined", node_location(name, loc)
                )
        op, type_ = self._check(name, loc, op, inputs)
        self._insert(Node(name, op, inputs, type_, loc))
        return name

    def set_outputs(
        self, outputs: Mapping[str, str] | Sequence[tuple[str, str]] | Sequence[str]
    ) -> None:
        """Graph outputs, in order: (output name, node name) pairs, a mapping, or node names."""
        if isinstance(outputs, Mapping):
            pairs = list(outputs.items())
        else:
            pairs = [(o, o) if isinstance(o, str) else (o[0], o[1]) for o in outputs]
        names = [p[0] for p in pairs]
        for out, node in pairs:
            if node not in self._seq:
                raise CimcError(f"output '{out}' refers to undefined value %{node}")
            if names.count(out) > 1:
                raise CimcError(f"output name '{out}' is used twice")
        self._outputs = pairs

    def unique_name(self, base: str) -> str:
        """`base` if unused, else `base_1`, `base_2`, ... (deterministic)."""
        if not base:
            raise CimcError("node names must not be empty")
        if base not in self._seq:
            return base
        n = self._suffix.get(base, 0)
        while True:
            n += 1
            candidate = f"{base}_{n}"
            if candidate not in self._seq:
                self._suffix[base] = n
                return candidate

    # ---- queries --------------------------------------------------------------------

    def node(self, name: str) -> Node:
        try:
            return self._nodes[name]
        except KeyError:
            raise CimcError(f"no value %{name} in graph @{self.name}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._seq

    def __len__(self) -> int:
        return len(self._seq)

    def __repr__(self) -> str:
        return f"<Graph @{self.name}: {len(self)} nodes, {len(self._outputs)} outputs>"

    def nodes(self) -> list[Node]:
        """All nodes in topological order, ties broken by insertion order."""
        return [self._nodes[n] for n in self.order()]

    def order(self) -> list[str]:
        if self._order is None:
            try:
                self._order = list(nx.lexicographical_topological_sort(self._g, key=self._seq.get))
            except nx.NetworkXUnfeasible:
                raise CimcError(f"graph @{self.name} has a cycle: {self._cycle_text()}") from None
        return list(self._order)

    def constant_value(self, name: str) -> np.ndarray | None:
        """The data of constant %name (read-only), or None when %name is not a constant."""
        op = self.node(name).op
        return op.value if isinstance(op, Constant) else None

    def input_nodes(self) -> list[Node]:
        """Graph inputs in insertion order."""
        return [n for n in self._by_seq() if isinstance(n.op, Input)]

    def constants(self) -> dict[str, np.ndarray]:
        """Constant data by node name, in insertion order."""
        return {n.name: n.op.value for n in self._by_seq() if isinstance(n.op, Constant)}

    @property
    def outputs(self) -> list[tuple[str, str]]:
        """(output name, node name) pairs in order."""
        return list(self._outputs)

    def users(self, name: str) -> list[str]:
        """Nodes that take `name` as an operand, in insertion order."""
        self.node(name)
        return sorted(self._g.successors(name), key=self._seq.__getitem__)

    def is_output(self, name: str) -> bool:
        return any(node == name for _, node in self._outputs)

    def input_types(self, node: Node) -> tuple[TensorType, ...]:
        return tuple(self.node(i).type for i in node.inputs)

    # ---- rewriting ------------------------------------------------------------------

    def replace_all_uses(self, old: str, new: str) -> int:
        """Make every user of `old` (and every output) use `new`; returns the use count.

        Uses inside `new` itself are kept, so `new = f(old)` can take old's place. Types are
        not re-checked here: `verify()` reports a user whose operand types no longer fit.
        """
        self.node(new)
        count = 0
        for user in self.users(old):
            if user == new:
                continue
            node = self.node(user)
            count += node.inputs.count(old)
            self.set_inputs(user, tuple(new if i == old else i for i in node.inputs))
        for k, (out, node_name) in enumerate(self._outputs):
            if node_name == old:
                self._outputs[k] = (out, new)
                count += 1
        return count

    def set_inputs(self, name: str, inputs: Sequence[str]) -> None:
        """Rewire a node's operands (unchecked beyond existence; `verify()` checks types)."""
        node = self.node(name)
        for i in inputs:
            self.node(i)
        self._g.remove_edges_from(list(self._g.in_edges(name)))
        self._g.add_edges_from((i, name) for i in inputs)
        self._nodes[name] = Node(name, node.op, tuple(inputs), node.type, node.loc)
        self._order = None

    def replace_op(
        self, name: str, op: Op, inputs: Sequence[str] | None = None, loc: str | None = None
    ) -> None:
        """Give a node a new op (and operands), re-inferring its type; users are unchanged.
        `loc` replaces its location (a fused op takes the location of the op doing the work)."""
        node = self.node(name)
        operands = node.inputs if inputs is None else tuple(inputs)
        where = node.loc if loc is None else loc
        new_op, type_ = self._check(name, where, op, operands)
        self.set_inputs(name, operands)
        self._nodes[name] = Node(name, new_op, operands, type_, where)

    def remove_node(self, name: str) -> None:
        """Remove an unused node (not an output, no users)."""
        users = self.users(name)
        if users:
            used_by = ", ".join(f"%{u}" for u in users)
            raise CimcError(f"cannot remove %{name}: still used by {used_by}")
        if self.is_output(name):
            raise CimcError(f"cannot remove %{name}: it is a graph output")
        self._g.remove_node(name)
        del self._seq[name], self._nodes[name]
        self._order = None

    def dead_code_elimination(self) -> int:
        """Remove every non-input node the outputs do not depend on; returns how many."""
        live: set[str] = set()
        for _, name in self._outputs:
            live.add(name)
            live.update(nx.ancestors(self._g, name))
        dead = [
            n.name for n in self._by_seq() if n.name not in live and not isinstance(n.op, Input)
        ]
        self._g.remove_nodes_from(dead)
        for name in dead:
            del self._seq[name], self._nodes[name]
        self._order = None
        return len(dead)

    def copy(self) -> Graph:
        """An independent graph sharing the (immutable) ops and constant arrays."""
        other = Graph(self.name)
        other._g = self._g.copy()
        other._nodes = dict(self._nodes)
        other._seq = dict(self._seq)
        other._next_seq = self._next_seq
        other._suffix = dict(self._suffix)
        other._outputs = list(self._outputs)
        return other

    # ---- verification ---------------------------------------------------------------

    def verify(self) -> None:
        """Check the whole graph; raise a CimcError naming the first bad node."""
        order = self.order()  # raises on cycles
        position = {n: k for k, n in enumerate(order)}
        for name in order:
            node = self.node(name)
            for i in node.inputs:
                if i not in position:
                    raise CimcError(f"operand %{i} is not defined", node.where)
                if position[i] >= position[name]:
                    raise CimcError(f"operand %{i} is used before its definition", node.where)
            op, type_ = self._check(name, node.loc, node.op, node.inputs)
            if op is not node.op and op != node.op:
                raise CimcError(f"op {node.op} is not in normal form (expected {op})", node.where)
            if type_ != node.type:
                raise CimcError(
                    f"recorded type {node.type} but its operands give {type_}", node.where
                )
        if not self._outputs:
            raise CimcError(f"graph @{self.name} has no outputs; call set_outputs")
        for out, name in self._outputs:
            if name not in position:
                raise CimcError(f"output '{out}' refers to undefined value %{name}")

    # ---- internals ------------------------------------------------------------------

    def _check(self, name: str, loc: str, op: Op, inputs: tuple[str, ...]) -> tuple[Op, TensorType]:
        """Arity, constant operands, normal form and type rule; errors located at the node."""
        where = node_location(name, loc)
        try:
            op.check_arity(len(inputs))
            for k in op.CONSTANT_OPERANDS:
                if k < len(inputs) and not isinstance(self.node(inputs[k]).op, Constant):
                    raise OpTypeError(f"operand {k} (%{inputs[k]}) of {op.NAME} must be a constant")
            types = tuple(self.node(i).type for i in inputs)
            op = op.normalize(types)
            return op, op.infer(types)
        except OpTypeError as e:
            raise CimcError(str(e), where) from None
        except CimcError as e:
            raise CimcError(e.message, e.location or where) from None

    def _insert(self, node: Node) -> None:
        self._g.add_node(node.name)
        self._nodes[node.name] = node
        self._g.add_edges_from((i, node.name) for i in node.inputs)
        self._seq[node.name] = self._next_seq
        self._next_seq += 1
        self._order = None

    def _by_seq(self) -> list[Node]:
        return list(self._nodes.values())  # dicts keep insertion order

    def _cycle_text(self) -> str:
        cycle = nx.find_cycle(self._g)
        return " -> ".join(f"%{u}" for u, _ in cycle) + f" -> %{cycle[0][0]}"
