"""Walk an ONNX graph once, folding constants and emitting canonical IR nodes.

Each ONNX value is either a numpy array (known at compile time: weights, shapes, masks
built from shapes) or a `Ref` to an IR node. A node whose inputs are all arrays is
evaluated on the spot, so shape subgraphs never reach the IR; a node with a run-time
input goes to the handler of its op type (onnx_ops_*.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import onnx

from cimc.errors import CimcError, InternalError
from cimc.importers.onnx_fold import attributes, constant_value, evaluate
from cimc.importers.onnx_schema import check_node
from cimc.importers.onnx_tensor import element_count, first_line, tensor_array
from cimc.importers.scopes import onnx_location
from cimc.ir.graph import Graph
from cimc.ir.op_base import OPS, Op
from cimc.ir.types import DType, TensorType


@dataclass(frozen=True)
class Ref:
    """A run-time value: the name of the IR node producing it."""

    name: str


@dataclass(frozen=True)
class IsNanOf:
    """IsNaN(x) of a run-time x, kept symbolic: only a Where NaN-guard may consume it."""

    operand: Ref
    loc: str


Value = np.ndarray | Ref | IsNanOf
Handler = Callable[["Translator", onnx.NodeProto, list["Value | None"]], list[Value]]
HANDLERS: dict[str, Handler] = {}

_ONNX_TO_DTYPE: dict[int, DType] = {
    onnx.TensorProto.FLOAT: DType.F32,
    onnx.TensorProto.INT64: DType.I64,
    onnx.TensorProto.INT32: DType.I32,
    onnx.TensorProto.INT16: DType.I16,
    onnx.TensorProto.INT8: DType.I8,
    onnx.TensorProto.BOOL: DType.BOOL,
}
# Constants of other float/int widths are converted when they meet the IR.
_NUMPY_TO_IR = {"float64": "float32", "float16": "float32", "uint8": "int32", "uint16": "int32"}
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.$\-]+")


def handles(*op_types: str) -> Callable[[Handler], Handler]:
    """Decorator registering a handler for ONNX op types with a run-time input."""

    def register(fn: Handler) -> Handler:
        for op_type in op_types:
            HANDLERS[op_type] = fn
        return fn

    return register


def ir_dtype(elem_type: int, where: str) -> DType:
    """The IR dtype of an ONNX tensor element type; a CimcError for the others."""
    if elem_type not in _ONNX_TO_DTYPE:
        known = elem_type in onnx.TensorProto.DataType.values()
        name = onnx.TensorProto.DataType.Name(elem_type) if known else f"#{elem_type} (unknown)"
        raise CimcError(f"tensors of type {name} are not supported at run time", where)
    return _ONNX_TO_DTYPE[elem_type]


def ir_array(value: np.ndarray) -> np.ndarray:
    """`value` converted to a dtype the IR has (float64 -> float32, ...)."""
    target = _NUMPY_TO_IR.get(value.dtype.name)
    array = value.astype(target) if target else value
    return np.ascontiguousarray(array).reshape(array.shape)  # a 0-d array stays 0-d


def clean_name(name: str, fallback: str) -> str:
    """A readable IR name from an ONNX name (``/encoder/Add_output_0`` -> ``encoder.Add``)."""
    text = name.strip("/").replace("/", ".").removesuffix("_output_0")
    text = _NAME_CHARS.sub("_", text).strip("_.")
    return text or fallback


class Translator:
    """State of one import: the IR graph being built and the ONNX value environment."""

    def __init__(self, opset: int, graph_name: str = "main") -> None:
        self.opset = opset
        self.graph = Graph(graph_name)
        self.env: dict[str, Value] = {}
        self._origin: dict[int, str] = {}  # id of an env array -> its ONNX value name
        self._materialized: dict[tuple[int, str], Ref] = {}  # (array id, dtype) -> IR constant
        self.node: onnx.NodeProto | None = None  # the node being translated (for naming)

    # ---- building blocks for handlers -------------------------------------------------

    @property
    def where(self) -> str:
        node = self.node
        return (node.name or node.op_type) if node is not None else "onnx"

    @property
    def loc(self) -> str:
        """The node's location in the graph: its module path, then its ONNX name."""
        return onnx_location(self.node) if self.node is not None else self.where

    def type_of(self, value: Value) -> TensorType:
        if isinstance(value, Ref):
            return self.graph.node(value.name).type
        if isinstance(value, np.ndarray):
            return TensorType.of(ir_array(value))
        raise CimcError("IsNaN result used outside a NaN guard", value.loc)

    def ref(self, value: Value | None, like: Ref | None = None) -> Ref:
        """`value` as an IR node; a constant is materialized (cast to `like`'s dtype)."""
        if value is None:
            raise CimcError("a required input is missing", self.where)
        if isinstance(value, Ref):
            return value
        if isinstance(value, IsNanOf):
            raise CimcError("IsNaN result used outside a NaN guard (Where)", value.loc)
        array = ir_array(value)
        if like is not None:
            array = array.astype(self.type_of(like).dtype.numpy, copy=False)
        if id(value) not in self._origin:  # a temporary: its id may be reused later
            return Ref(self.graph.add_constant(array, self._base_name() + ".const", self.loc))
        key = (id(value), array.dtype.name)
        if key not in self._materialized:
            name = self.graph.add_constant(array, self._constant_name(value), loc=self.loc)
            self._materialized[key] = Ref(name)
        return self._materialized[key]

    def emit(self, op: Op, inputs: Sequence[Value | None], suffix: str = "") -> Ref:
        """Add `op` on `inputs` (constants materialized); named after the ONNX output."""
        refs = [self.ref(v).name for v in inputs]
        base = self._base_name() + (f".{suffix}" if suffix else "")
        return Ref(self.graph.add_node(op, refs, name=base, loc=self.loc))

    def fail(self, message: str) -> CimcError:
        return CimcError(message, self.where)

    def axis(self, value: int, rank: int, what: str = "axis") -> int:
        """`value` in [-rank, rank) made non-negative; a located error otherwise."""
        if not -rank <= value < rank:
            raise self.fail(f"{what} {value} is out of range for {rank} axes")
        return value % rank

    def _base_name(self) -> str:
        node = self.node
        if node is None or not node.output:
            return "v"
        return clean_name(node.output[0], node.op_type.lower())

    def _constant_name(self, value: np.ndarray) -> str:
        onnx_name = self._origin.get(id(value))
        if onnx_name is not None:
            return clean_name(onnx_name, "const")
        return self._base_name() + ".const"

    def bind(self, name: str, value: Value) -> None:
        """Record an ONNX value; arrays remember their first name (to name constants)."""
        self.env[name] = value
        if isinstance(value, np.ndarray):
            self._origin.setdefault(id(value), name)

    # ---- the walk ---------------------------------------------------------------------

    def add_initializers(self, model: onnx.ModelProto, base_dir: Path) -> None:
        """Move the weights out of the protobuf one by one (peak memory ~1x the weights);
        external data (files in `base_dir`) is mapped, not read."""
        initializers = model.graph.initializer
        arrays: list[tuple[str, np.ndarray]] = []
        while initializers:
            tensor = initializers[-1]
            arrays.append((tensor.name, tensor_array(tensor, base_dir=base_dir)))
            del initializers[-1]
        for name, array in reversed(arrays):
            self.bind(name, array)

    def add_inputs(self, dtypes: dict[str, int], shapes: dict[str, tuple[int, ...]]) -> None:
        for name, shape in shapes.items():
            element_count(shape, f"input '{name}'", name)  # before anything is sized by it
            dtype = ir_dtype(dtypes[name], f"input '{name}'")
            meaning = input_meaning(name, dtype)
            ir_name = self.graph.add_input(name, TensorType(shape, dtype), meaning, loc=name)
            self.env[name] = Ref(ir_name)

    def run(self, nodes: Sequence[onnx.NodeProto]) -> None:
        for node in nodes:
            self.node = node
            check_node(node, self.opset, self.where)  # arity and attribute types
            inputs = [self.lookup(name) if name else None for name in node.input]
            try:
                outputs = self.translate(node, inputs)
            except CimcError as e:
                e.location = e.location or self.where  # errors from shared helpers: locate
                raise
            except Exception as e:
                # bad models are refused by explicit checks; anything else is a cimc bug
                raise InternalError(
                    f"{type(e).__name__} while translating {node.op_type} node: {first_line(e)}",
                    self.where,
                ) from e
            check_folded(outputs, self.where)
            for name, value in zip(node.output, outputs, strict=False):
                if name:
                    self.bind(name, value)
        self.node = None

    def lookup(self, name: str) -> Value:
        if name not in self.env:
            raise CimcError(f"value '{name}' is used before it is defined", self.where)
        return self.env[name]

    def translate(self, node: onnx.NodeProto, inputs: list[Value | None]) -> list[Value]:
        if node.domain not in ("", "ai.onnx"):
            raise unknown_op(node)
        if node.op_type == "Constant":
            return [constant_value(node)]
        present = [v for v in inputs if v is not None]
        if all(isinstance(v, np.ndarray) for v in present):
            arrays = [v if isinstance(v, np.ndarray) else None for v in inputs]
            return list(evaluate(node, arrays, self.opset))
        handler = HANDLERS.get(node.op_type)
        if handler is None:
            expanded = self.expand_function(node, inputs)
            if expanded is None:
                raise unknown_op(node)
            return expanded
        return handler(self, node, inputs)

    def expand_function(
        self, node: onnx.NodeProto, inputs: list[Value | None]
    ) -> list[Value] | None:
        """Translate `node` as its schema's function body (onnx_functions.py), or None."""
        from cimc.importers.onnx_functions import function_body, tensor_type

        types: list[onnx.TypeProto | None] = []
        for value in inputs:
            if value is None:
                types.append(None)
            elif isinstance(value, Ref | np.ndarray):
                t = self.type_of(value)
                types.append(tensor_type(np.dtype(t.dtype.numpy), t.shape))
            else:
                return None
        body = function_body(node, self.opset, types)
        if body is None:
            return None
        outer, opset = self.node, self.opset
        self.opset = body.opset
        try:
            self.run(body.nodes)
        finally:
            self.node, self.opset = outer, opset
        # positions matter (the caller binds them by output name); an unnamed optional
        # output is never bound
        return [self.lookup(name) if name else cast(Value, None) for name in node.output]

    def attrs(self) -> dict:
        assert self.node is not None
        return attributes(self.node)


def check_folded(values: Sequence[object], where: str) -> None:
    for value in values:
        if isinstance(value, np.ndarray):
            element_count(value.shape, "a folded constant", where)


def input_meaning(name: str, dtype: DType) -> str:
    """What an input holds, guessed from its name (drives default inputs/calibration)."""
    lowered = name.lower()
    if dtype.is_float:
        return "float"
    for meaning in ("attention_mask", "position_ids", "token_type_ids"):
        if meaning in lowered:
            return meaning
    return "token_ids"


def unknown_op(node: onnx.NodeProto) -> CimcError:
    domain = f" (domain '{node.domain}')" if node.domain not in ("", "ai.onnx") else ""
    canonical = ", ".join(sorted(OPS))
    return CimcError(
        f"unsupported ONNX op {node.op_type}{domain} in node '{node.name}'; cimc maps ONNX "
        f"onto the canonical ops: {canonical}",
        node.name or node.op_type,
    )
