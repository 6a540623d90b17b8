"""Model-native names: the module path a node came from (`model.transformer.h.0.attn.c_attn`),
read from what the exporters record, for node locations (IR `loc`, assembly comments,
inspect, report, plots and trace all show them).

- torch.export: `node.meta["nn_module_stack"]`, innermost module last;
- dynamo ONNX export: the node's `pkg.torch.onnx.name_scopes` metadata (module paths, then
  the fx node's own name);
- legacy ONNX export: the node name is the scope path, `/model/encoder/layer.1/.../Op`.
"""

from __future__ import annotations

import ast
import re
from typing import Any

NAME_SCOPES = "pkg.torch.onnx.name_scopes"
_SELF = re.compile(r"^L\['self'\]")  # dynamo's spelling of the root module
_ITEM = re.compile(r"\._modules\['([^']+)'\]|\['([^']+)'\]")


def scoped(module: str, origin: str) -> str:
    """A location: `module/origin`, or the origin alone at the root module."""
    return f"{module}/{origin}" if module else origin


def onnx_location(node: Any) -> str:
    """`module/name` of an ONNX node: the dynamo exporter's innermost name scope and the
    node name, or a legacy scope path `/a/b.0/Op` read as `a.b.0/Op`; else the name."""
    name = node.name or node.op_type
    for prop in getattr(node, "metadata_props", ()):
        if prop.key == NAME_SCOPES:
            return scoped(_dynamo_scope(prop.value), name)
    parts = name.strip("/").split("/")
    if name.startswith("/") and len(parts) > 1:
        return scoped(".".join(parts[:-1]), parts[-1])
    return name


def _dynamo_scope(text: str) -> str:
    try:
        scopes = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return ""
    if not isinstance(scopes, list) or len(scopes) < 2:
        return ""
    return str(scopes[-2])  # the last entry is the fx node itself


def fx_module_path(meta: dict[str, Any]) -> str:
    """The innermost module of an fx node, from torch.export's nn_module_stack."""
    stack = meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = str(list(stack.values())[-1][0])
    path = _SELF.sub("", path)
    return _ITEM.sub(lambda m: "." + (m.group(1) or m.group(2)), path).strip(".")
