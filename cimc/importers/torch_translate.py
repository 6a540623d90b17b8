"""Walks an exported aten graph and builds its graph of canonical ops, op by op.

Values of fx nodes are either run-time values (`Ref`, naming a canonical node) or
constants (torch tensors and Python scalars). A node whose operands are all constants is
folded by running its aten op; shape queries on run-time values (sym_size, new_ones...)
are answered from the bound static shapes. Everything else goes through the aten op
table (`torch_ops.TABLE`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.export.graph_signature import InputKind, OutputKind
from torch.fx import Node as FxNode
from torch.fx.node import map_aggregate

from cimc.errors import CimcError
from cimc.importers.torch_builder import Builder
from cimc.importers.torch_fx import (
    IGNORED,
    SHAPE_ONLY,
    Ref,
    check_supported,
    contains_ref,
    fetch_attr,
    input_meaning,
    ir_dtype,
    location,
    scalar_dtype,
    target_name,
    to_numpy,
    unsupported,
)
from cimc.importers.torch_load import LoadedProgram, UserInput, first_line
from cimc.ir import DType, Graph, TensorType
from cimc.ir.op_base import Op
from cimc.ir.ops import Cast

Handler = Callable[["Translator", FxNode], Any]

_STORED_KINDS = (
    InputKind.PARAMETER,
    InputKind.BUFFER,
    InputKind.CONSTANT_TENSOR,
    InputKind.CUSTOM_OBJ,
)


class Translator:
    """State of one translation: the fx value environment and the builder."""

    def __init__(self, loaded: LoadedProgram, builder: Builder, table: dict[str, Handler]) -> None:
        self.loaded = loaded
        self.program = loaded.program
        self.b = builder
        self.table = table
        self.env: dict[str, Any] = {}
        self.node: FxNode | None = None
        self._materialized: dict[tuple[FxNode | str, str], str] = {}

    # ---- helpers for handlers ---------------------------------------------------------

    @property
    def where(self) -> str:
        return location(self.node) if self.node is not None else self.loaded.source

    def error(self, message: str) -> CimcError:
        return CimcError(message, self.where)

    def value(self, arg: Any) -> Any:
        """The value of an fx argument (nested lists/tuples mapped element-wise)."""
        return map_aggregate(arg, lambda a: self.env[a.name] if isinstance(a, FxNode) else a)

    def is_runtime(self, arg: Any) -> bool:
        return isinstance(self.value(arg), Ref)

    def name(self, arg: Any, dtype: DType | None = None, layout: str = "") -> str:
        """A canonical value for `arg`: run-time values as they are, constants materialized
        (`layout` "kn" transposes a 2-D weight), scalars as 0-d constants of `dtype`."""
        value = self.value(arg)
        if isinstance(value, Ref):
            return self.cast(value.name, dtype) if dtype is not None else value.name
        if isinstance(value, torch.Tensor):
            return self.tensor_constant(arg, value, dtype, layout)
        if isinstance(value, bool | int | float):
            kind = dtype or scalar_dtype(value)
            return self.b.constant(np.array(value, dtype=kind.numpy), self.fresh("scalar"))
        raise self.error(f"expected a tensor operand, got {value!r}")

    def tensor_constant(
        self, arg: Any, value: torch.Tensor, dtype: DType | None, layout: str
    ) -> str:
        array = to_numpy(value, self.where)
        if layout == "kn":
            array = np.ascontiguousarray(array.T)
        if dtype is not None:
            array = array.astype(dtype.numpy)
        base = arg.name if isinstance(arg, FxNode) else self.fresh("const")
        # keyed by the fx node itself: inlined sub-graphs reuse node names
        key = (arg if isinstance(arg, FxNode) else base, f"{layout}:{array.dtype.name}")
        if key not in self._materialized:
            share = not (isinstance(arg, FxNode) and arg.op == "placeholder")
            self._materialized[key] = self.b.constant(array, base, share)
        return self._materialized[key]

    def cast(self, name: str, dtype: DType) -> str:
        """`name` as `dtype`; a value of that dtype already is its own cast (no node)."""
        if self.b.type_of(name).dtype == dtype:
            return name
        return self.b.emit(Cast(dtype), (name,), f"{name}_{dtype}")

    def fresh(self, suffix: str) -> str:
        return f"{self.node.name}_{suffix}" if self.node is not None else suffix

    def emit(self, op: Op, inputs: tuple[str, ...] | list[str], suffix: str = "") -> Ref:
        """Build `op`; the result is named after the fx node (plus `suffix` for helpers)."""
        assert self.node is not None
        name = self.fresh(suffix) if suffix else self.node.name
        return Ref(self.b.emit(op, tuple(inputs), name))

    def out_dtype(self) -> DType:
        assert self.node is not None
        val = self.node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise self.error("the exported node has no tensor metadata")
        return ir_dtype(val.dtype, self.where)

    def type_of(self, arg: Any) -> TensorType:
        """The type of an fx argument, run-time or constant."""
        value = self.value(arg)
        if isinstance(value, Ref):
            return self.b.type_of(value.name)
        if isinstance(value, torch.Tensor):
            return TensorType(tuple(value.shape), ir_dtype(value.dtype, self.where))
        raise self.error(f"expected a tensor operand, got {value!r}")

    # ---- the walk ---------------------------------------------------------------------

    def run(self) -> Graph:
        check_supported(self.program, self.table, self.loaded.source)
        self.bind_placeholders()
        outputs = self.walk(self.program.graph_module)
        self.set_outputs(outputs)
        self.node = None
        self.b.graph.dead_code_elimination()
        return self.b.graph

    def walk(self, module: torch.fx.GraphModule) -> FxNode:
        """Translate the nodes of `module` (placeholders already bound); its output node."""
        for node in module.graph.nodes:
            self.node = node
            if node.op == "call_function":
                self.env[node.name] = self.call(node)
            elif node.op == "get_attr":
                self.env[node.name] = fetch_attr(module, str(node.target))
            elif node.op == "output":
                return node
            elif node.op != "placeholder":
                raise self.error(f"fx node kind '{node.op}' is not supported")
        raise self.error("the fx graph has no output node")

    def inline(self, module: torch.fx.GraphModule, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """Translate a higher-order op's body on `args`; returns its output values."""
        outer_env, outer_node = self.env, self.node
        self.env = {}
        placeholders = [n for n in module.graph.nodes if n.op == "placeholder"]
        for node, value in zip(placeholders, args, strict=True):
            self.env[node.name] = value
        out = self.walk(module)
        values = tuple(self.value(out.args[0]))
        self.env, self.node = outer_env, outer_node
        return values

    def bind_placeholders(self) -> None:
        specs = {s.arg.name: s for s in self.program.graph_signature.input_specs}
        inputs = {i.name: i for i in self.loaded.inputs}
        for node in self.program.graph.nodes:
            if node.op != "placeholder":
                continue
            self.node = node
            spec = specs.get(node.name)
            if spec is None:
                raise self.error("the program's signature does not list this input; re-save it")
            if spec.kind == InputKind.USER_INPUT:
                self.env[node.name] = self.user_input(node, inputs.get(node.name))
            elif spec.kind in _STORED_KINDS:
                self.env[node.name] = self.stored_value(spec.kind, spec.target)
            else:
                raise self.error(f"program input kind {spec.kind.name} is not supported")

    def stored_value(self, kind: InputKind, target: str | None) -> Any:
        """A parameter, buffer or constant (non-persistent buffers live in constants). A
        damaged .pt2 may lack it (fuzz seeds 396, 554: a dropped constants entry)."""
        value = None
        if kind in (InputKind.PARAMETER, InputKind.BUFFER):
            value = self.program.state_dict.get(target) if target is not None else None
        if value is None and target is not None:
            value = self.program.constants.get(target)
        if value is None:
            raise self.error(
                f"the program has no value for its {kind.name.lower()} '{target}'; the file is "
                "incomplete or corrupt, re-save it with torch.export.save"
            )
        return value

    def user_input(self, node: FxNode, bound: UserInput | None) -> Any:
        if bound is None:  # a non-tensor input (e.g. a flag): its exported value
            return node.meta.get("val")
        dtype = ir_dtype(bound.dtype, self.where)
        type_ = TensorType(bound.shape, dtype)
        return Ref(
            self.b.graph.add_input(node.name, type_, input_meaning(node.name, dtype), self.where)
        )

    def call(self, node: FxNode) -> Any:
        name = target_name(node)
        self.b.loc = self.where
        if name in IGNORED:
            return None
        args, kwargs = self.value(node.args), self.value(node.kwargs)
        if name in SHAPE_ONLY:
            args = (self.dummy(args[0]), *args[1:])
        if not contains_ref((args, kwargs)):
            return self.fold(node, args, kwargs)
        if node.target is operator.getitem:
            return args[0][args[1]]
        if name not in self.table:
            raise unsupported([(name, node)])
        return self.table[name](self, node)

    def dummy(self, value: Any) -> Any:
        """A zero tensor standing for a run-time value whose shape alone is read."""
        if not isinstance(value, Ref):
            return value
        t = self.b.type_of(value.name)
        return torch.zeros(t.shape, dtype=getattr(torch, str(t.dtype.numpy)))

    def fold(self, node: FxNode, args: Any, kwargs: Any) -> Any:
        function = node.target
        assert callable(function)
        try:
            with torch.no_grad():
                return function(*args, **kwargs)
        except Exception as exc:  # any aten failure on constants is a model problem
            message = f"cannot evaluate {target_name(node)} on constants: {first_line(exc)}"
            raise self.error(message) from None

    def set_outputs(self, node: FxNode) -> None:
        self.node = node
        specs = self.program.graph_signature.output_specs
        values = node.args[0]
        assert isinstance(values, tuple | list)
        pairs: list[tuple[str, str]] = []
        for spec, arg in zip(specs, values, strict=True):
            if spec.kind != OutputKind.USER_OUTPUT:
                raise self.error(f"programs with {spec.kind.name} outputs are not supported")
            out_name = "output" if len(values) == 1 else f"output_{len(pairs)}"
            if not isinstance(self.value(arg), Ref | torch.Tensor):
                raise self.error(f"output {out_name} is not a tensor")
            pairs.append((out_name, self.name(arg)))
        self.b.graph.set_outputs(pairs)
