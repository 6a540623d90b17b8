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
`splat<v>`, others as a reference `@name` to data passed to the parser (dict or .npz).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from cimc.ir.graph import Graph, Node
from cimc.ir.ops_tensor import Constant, Input
from cimc.ir.types import DType, TensorType

INLINE_LIMIT = 8
BARE_NAME = re.compile(r"[A-Za-z0-9_.$\-]+")


def print_graph(graph: Graph) -> str:
    """The whole graph as text (ends with a newline); parse_graph reads it back exactly."""
    lines = [f"graph {format_symbol(graph.name)} {{"]
    lines += ["  " + print_node(node) for node in graph.nodes()]
    outputs = ", ".join(f"{json.dumps(out)} = {format_value(n)}" for out, n in graph.outputs)
    lines.append(f"  return {outputs}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def print_node(node: Node) -> str:
    """One node as a line of text (without indentation)."""
    op = node.op
    if isinstance(op, Input):
        body = f"input {{meaning = {json.dumps(op.meaning)}}}"
    elif isinstance(op, Constant):
        body = f"constant {format_constant(node.name, op.value)}"
    else:
        operands = ", ".join(format_value(i) for i in node.inputs)
        body = f"{op.NAME}({operands}){format_attributes(op.attributes())}"
    loc = f" loc({json.dumps(node.loc)})" if node.loc else ""
    return f"{format_value(node.name)} = {body} : {format_type(node.type)}{loc}"


def referenced_constants(graph: Graph) -> dict[str, np.ndarray]:
    """The constants printed as `@name` references (the data a reader of the text needs)."""
    return {name: value for name, value in graph.constants().items() if is_referenced(value)}


def save_constants(graph: Graph, path: str | Path) -> None:
    """Write the referenced constants to an .npz file that parse_graph can load."""
    arrays: dict[str, Any] = referenced_constants(graph)
    np.savez(Path(path), **arrays)


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


def format_attributes(attributes: dict[str, Any]) -> str:
    if not attributes:
        return ""
    items = ", ".join(f"{k} = {format_attribute(v)}" for k, v in sorted(attributes.items()))
    return f" {{{items}}}"


def format_attribute(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back to the same double
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, DType):
        return value.value
    if isinstance(value, tuple):
        return "[" + ", ".join(format_attribute(v) for v in value) + "]"
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
