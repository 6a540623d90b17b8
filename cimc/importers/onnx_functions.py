"""ONNX ops that cimc has no handler for but whose schema defines them as a function of
other ops (opset 23's Attention and RotaryEmbedding, Elu, HardSigmoid, ...): the node is
replaced by the function's body, as the ONNX spec defines the op, and those nodes are
translated (and recognized by the idiom passes) like any others.

The body is the schema's function for the model's opset, or its context-dependent function
(built from the node's attributes and its inputs' types: Attention's depends on the ranks
and on which optional inputs are present). Attribute references are bound to the node's
attributes (schema defaults filled in); inner values get a prefix unique to the node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, FunctionProto, NodeProto, TypeProto


@dataclass(frozen=True)
class Body:
    nodes: list[NodeProto]
    opset: int  # the default-domain opset the body's nodes are written in


def function_body(node: NodeProto, opset: int, input_types: list[TypeProto | None]) -> Body | None:
    """The nodes that define `node` at `opset`, or None when its schema has no function."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain or "")
    except onnx.defs.SchemaError:
        return None
    proto = _function(schema, node, opset, input_types)
    if proto is None:
        return None
    body_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    attrs = {a.name: a for a in node.attribute}
    for name, spec in schema.attributes.items():
        if name not in attrs and spec.default_value and spec.default_value.name:
            attrs[name] = spec.default_value
    for default in proto.attribute_proto:  # function-level defaults (onnx >= 1.15)
        attrs.setdefault(default.name, default)
    prefix = f"{node.output[0] if node.output and node.output[0] else node.op_type}::"
    names = {
        formal: node.input[k] if k < len(node.input) else "" for k, formal in enumerate(proto.input)
    }
    for k, formal in enumerate(proto.output):
        if k < len(node.output) and node.output[k]:
            names[formal] = node.output[k]

    def rename(name: str) -> str:
        if name in names:
            return names[name]
        return prefix + name if name else ""

    nodes = []
    for inner in proto.node:
        if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in inner.attribute):
            return None  # bodies with sub-graphs (If, Loop) are not expanded here
        out = NodeProto()
        out.CopyFrom(inner)
        del out.input[:], out.output[:], out.attribute[:]
        out.input.extend(rename(i) for i in inner.input)
        out.output.extend(rename(o) for o in inner.output)
        out.name = prefix + (inner.name or inner.op_type)
        for attr in inner.attribute:
            if attr.ref_attr_name:
                if attr.ref_attr_name not in attrs:
                    continue  # an unset optional attribute: the inner op's default
                bound = AttributeProto()
                bound.CopyFrom(attrs[attr.ref_attr_name])
                bound.name = attr.name
                out.attribute.append(bound)
            else:
                out.attribute.append(attr)
        nodes.append(out)
    return Body(nodes, body_opset)


def _function(
    schema: Any, node: NodeProto, opset: int, types: list[TypeProto | None]
) -> FunctionProto | None:
    """The schema's function (onnx's stubs do not declare these OpSchema methods)."""
    versions = [v for v in schema.function_opset_versions if v <= opset]
    if versions:
        proto = FunctionProto()
        proto.ParseFromString(schema.get_function_with_opset_version(max(versions)))
        return proto
    versions = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
    if not versions:
        return None
    filled = NodeProto()
    filled.CopyFrom(node)
    present = {a.name for a in node.attribute}
    for name, spec in schema.attributes.items():
        if name not in present and spec.default_value and spec.default_value.name:
            filled.attribute.append(spec.default_value)
    try:
        data = schema.get_context_dependent_function_with_opset_version(
            max(versions),
            filled.SerializeToString(),
            [(t or TypeProto()).SerializeToString() for t in types],
        )
    except Exception:  # noqa: BLE001 - the schema refuses these inputs: no body
        return None
    if not data:
        return None
    proto = FunctionProto()
    proto.ParseFromString(data)
    return proto if proto.node else None


def tensor_type(dtype: np.dtype, shape: tuple[int, ...]) -> TypeProto:
    return onnx.helper.make_tensor_type_proto(onnx.helper.np_dtype_to_tensor_dtype(dtype), shape)
