"""The text form of a graph: MLIR-like, one node per line, sorted attributes, stable names.

    graph @tiny {
      %x = input {meaning = "float"} : f32[1, 8, 16]
      %fc.weight = constant @fc.weight : f32[16, 32]
      %half = constant dense<0.5> : f32[]
      %fc = linear(%x, %fc.weight) : f32[1, 8, 32] loc("/layer0/fc/MatMul")
      %softmax = softmax(%fc) {axis = 2} : f32[1, 8, 32]
      return "probs" = %softmax
    }

Constants with at most INLINE_LIMIT elements print inline (`dense<...>`), uniform ones as
`splat<v>`, others as a reference `@name` to data passed to the parser (a dict, or a
.safetensors / .npz file: cimc.ir.tensor_file). Arrays inside attributes print the same way
followed by their type; struct attributes (a dialect's plans) print field by field:

    %fc = q.linear(%x) {bits = 8, plan = LinearPlan<weight = @fc.plan.weight : i8[16, 32],
          bias = splat<0> : i32[32], requant = Requant<mult = dense<1234> : i64[], ...>>, ...}

An attribute array printed by reference is named after its node and path (`fc.plan.weight`),
with a suffix `_1`, `_2`... in the rare graph where a constant already has that name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cimc.ir.graph import Graph, Node
from cimc.ir.op_base import Op, attribute_schema, is_quiet_default, is_struct
from cimc.ir.ops_tensor import Constant, Input
from cimc.ir.tensor_file import save_tensors
from cimc.ir.types import DType, TensorType

INLINE_LIMIT = 8
BARE_NAME = re.compile(r"[A-Za-z0-9_.$\-]+")


def print_graph(graph: Graph) -> str:
    """The whole graph as text (ends with a newline); parse_graph reads it back exactly."""
    names = ArrayNames(graph)
    lines = [f"graph {format_symbol(graph.name)} {{"]
    lines += ["  " + print_node(node, names) for node in graph.nodes()]
    outputs = ", ".join(f"{json.dumps(out)} = {format_value(n)}" for out, n in graph.outputs)
    lines.append(f"  return {outputs}")
    lines.append("}")
    return "\n".join(lines) + "\n"


Ref = Callable[[str], str]  # attribute path ("plan.requant.mult") -> name of its array


def print_node(node: Node, names: ArrayNames | None = None) -> str:
    """One node as a line of text (without indentation); `names` (of the whole graph) keep
    the names of referenced attribute arrays unique."""
    op = node.op
    if isinstance(op, Input):
        body = f"input {{meaning = {json.dumps(op.meaning)}}}"
    elif isinstance(op, Constant):
        body = f"constant {format_constant(node.name, op.value)}"
    else:
        operands = ", ".join(format_value(i) for i in node.inputs)
        ref = names.ref(node.name) if names else lambda path: f"{node.name}.{path}"
        body = f"{op.NAME}({operands}){format_attributes(op.attributes(), ref)}"
    loc = f" loc({json.dumps(node.loc)})" if node.loc else ""
    return f"{format_value(node.name)} = {body} : {format_type(node.type)}{loc}"


class ArrayNames:
    """The arrays a graph's text holds by reference, by name: constants under their node's
    name, attribute arrays under `node.path` (made unique; constants keep their names)."""

    def __init__(self, graph: Graph) -> None:
        self.arrays = {n: v for n, v in graph.constants().items() if is_referenced(v)}
        self._names: dict[tuple[str, str], str] = {}
        for node in graph.nodes():
            for path, value in attribute_arrays(node.op):
                if is_referenced(value):
                    name = self._free(f"{node.name}.{path}")
                    self._names[node.name, path] = name
                    self.arrays[name] = value

    def _free(self, name: str) -> str:
        k, free = 0, name
        while free in self.arrays:
            k += 1
            free = f"{name}_{k}"
        return free

    def ref(self, node: str) -> Ref:
        return lambda path: self._names.get((node, path), f"{node}.{path}")


def attribute_arrays(op: Op) -> Iterator[tuple[str, np.ndarray]]:
    """(path, array) of every array among an op's attributes, inside structs too."""
    if isinstance(op, Constant):
        return
    for name, value in op.attributes().items():
        yield from _arrays(value, name)


def _arrays(value: Any, path: str) -> Iterator[tuple[str, np.ndarray]]:
    if isinstance(value, np.ndarray):
        yield path, value
    elif is_struct(type(value)):
        for field in attribute_schema(type(value)):
            yield from _arrays(getattr(value, field), f"{path}.{field}")


def referenced_constants(graph: Graph) -> dict[str, np.ndarray]:
    """The arrays printed as `@name` references, by name (the data a reader of the text
    needs): large constants and large arrays inside attributes (plans)."""
    return ArrayNames(graph).arrays


def save_constants(graph: Graph, path: str | Path) -> None:
    """Write the referenced arrays to a .safetensors or .npz file that parse_graph loads."""
    save_tensors(referenced_constants(graph), path)


def is_referenced(value: np.ndarray) -> bool:
    return value.size > INLINE_LIMIT and not _is_uniform(value)


def format_constant(name: str, value: np.ndarray) -> str:
    if not is_referenced(value):
        if value.size <= INLINE_LIMIT:
            items = [format_element(v) for v in value.reshape(-1)]
            body = items[0] if value.ndim == 0 else f"[{', '.join(items)}]"
            return f"dense<{body}>"
        return f"splat<{format_element(value.reshape(-1)[0])}>"
    return format_symbol(name)


def format_element(value: Any) -> str:
    """A tensor element: shortest round-tripping float32 text, int, or true/false."""
    if isinstance(value, np.bool_ | bool):
        return "true" if value else "false"
    if isinstance(value, np.floating):
        return str(np.float32(value))
    return str(int(value))


def format_attributes(attributes: dict[str, Any], ref: Ref | None = None) -> str:
    if not attributes:
        return ""
    items = ", ".join(f"{k} = {format_attribute(v, ref, k)}" for k, v in sorted(attributes.items()))
    return f" {{{items}}}"


def format_attribute(value: Any, ref: Ref | None = None, path: str = "") -> str:
    """An attribute value; `ref(path)` names an array that prints by reference."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return repr(float(value))  # shortest text that reads back to the same double
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, DType):
        return value.value
    if isinstance(value, tuple):
        return "[" + ", ".join(format_attribute(v) for v in value) + "]"
    if isinstance(value, np.ndarray):
        name = ref(path) if ref else path
        return f"{format_constant(name, value)} : {TensorType.of(value)}"
    if is_struct(type(value)):
        fields = ", ".join(
            f"{f} = {format_attribute(getattr(value, f), ref, f'{path}.{f}')}"
            for f in attribute_schema(type(value))
            if not is_quiet_default(value, f)
        )
        return f"{type(value).__name__}<{fields}>"
    raise TypeError(f"cannot print attribute value {value!r}")


def format_type(t: TensorType) -> str:
    return str(t)


def format_value(name: str) -> str:
    return "%" + _name_text(name)


def format_symbol(name: str) -> str:
    return "@" + _name_text(name)


def _name_text(name: str) -> str:
    return name if BARE_NAME.fullmatch(name) else json.dumps(name)


def _is_uniform(value: np.ndarray) -> bool:
    """All elements have the same bytes (so -0.0 and 0.0, or NaN payloads, never merge)."""
    if value.size == 0:
        return False
    rows = np.ascontiguousarray(value).reshape(value.size).view(np.uint8).reshape(value.size, -1)
    if not (rows[-1] == rows[0]).all():
        return False  # fast exit for weights, so printing a big model stays cheap
    return bool((rows == rows[0]).all())
