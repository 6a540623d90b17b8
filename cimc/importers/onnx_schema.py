"""Check one ONNX node against its operator schema before translating it.

Wrong input or output counts, a required input left empty, a missing required attribute or
an attribute of the wrong type are the model's fault: each is a one-line CimcError at the
node. Handlers can then unpack inputs and read attributes without guarding every access,
and an exception they still raise is a cimc bug (see `Translator.run`).
"""

from __future__ import annotations

from typing import Any, cast

import onnx
from onnx.defs import OpSchema

from cimc.errors import CimcError

_SINGLE = OpSchema.FormalParameterOption.Single


def node_schema(node: onnx.NodeProto, opset: int) -> OpSchema | None:
    """The schema of `node` at `opset`, or None for an op ONNX does not define there."""
    try:
        return onnx.defs.get_schema(node.op_type, opset, node.domain)
    except onnx.defs.SchemaError:
        return None


def check_node(node: onnx.NodeProto, opset: int, where: str) -> None:
    """A CimcError at `where` unless the node's arity and attribute types fit its schema."""
    schema = node_schema(node, opset)
    if schema is None:
        return  # unknown ops get their own message from the translator
    _check_count("inputs", len(node.input), schema.min_input, schema.max_input, node, where)
    _check_count("outputs", len(node.output), schema.min_output, schema.max_output, node, where)
    for k, formal in enumerate(schema.inputs[: len(node.input)]):
        if formal.option == _SINGLE and not node.input[k]:
            raise CimcError(
                f"{node.op_type} input {k} ('{formal.name}') is required but left empty", where
            )
    given = {a.name: a for a in node.attribute}
    for name, spec in sorted(schema.attributes.items()):
        attr = given.get(name)
        if attr is None:
            if spec.required:
                raise CimcError(f"{node.op_type} needs its '{name}' attribute", where)
            continue
        code = int(cast(Any, spec.type))  # an IntEnum (the stubs do not say so)
        if attr.type != code:
            want = onnx.AttributeProto.AttributeType.Name(code)
            raise CimcError(
                f"{node.op_type} attribute '{name}' must be of type {want}, got "
                f"{_type_name(attr.type)}",
                where,
            )


def _check_count(what: str, n: int, low: int, high: int, node: onnx.NodeProto, where: str) -> None:
    if low <= n <= high:
        return
    expected = f"{low}" if low == high else f"{low} to {high}" if high < 1 << 20 else f">= {low}"
    raise CimcError(f"{node.op_type} takes {expected} {what}, the node has {n}", where)


def _type_name(code: int) -> str:
    try:
        return onnx.AttributeProto.AttributeType.Name(code)
    except ValueError:
        return f"#{code}"
