"""What the torch importer reads off exported fx graphs, apart from translating them.

Run-time values (`Ref`), dtypes and constants, target names and source locations of fx
nodes, the aten ops that are checks or shape queries, which nodes depend on user input
values (`runtime_nodes`), and the one error that names every aten op on run-time values
without a translation (`check_supported`). torch_translate.py walks the graph with these.
"""

from __future__ import annotations

import operator
import os
import re
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.export.graph_signature import InputKind
from torch.fx import Node as FxNode
from torch.fx.node import map_aggregate

from cimc.errors import CimcError
from cimc.importers.scopes import fx_module_path, scoped
from cimc.ir import DType
from cimc.ir.op_base import OPS


@dataclass(frozen=True)
class Ref:
    """A run-time value: the name of the canonical node that produces it."""

    name: str


# Ops without effect on the values we compute (checks, no-op markers).
IGNORED = frozenset(
    {
        "aten._assert_tensor_metadata.default",
        "aten._assert_scalar.default",
        "aten._assert_async.msg",
        "aten.sym_constrain_range_for_size.default",
        "aten.sym_constrain_range.default",
    }
)

# Ops that read only the shape / dtype of their first operand.
SHAPE_ONLY = frozenset(
    {
        "aten.sym_size.int",
        "aten.sym_numel.default",
        "aten.sym_stride.int",
        "aten.new_ones.default",
        "aten.new_zeros.default",
        "aten.new_full.default",
        "aten.new_empty.default",
        "aten.zeros_like.default",
        "aten.ones_like.default",
        "aten.full_like.default",
        "aten.empty_like.default",
    }
)

TORCH_DTYPES: dict[torch.dtype, DType] = {
    torch.float32: DType.F32,
    torch.float64: DType.F32,
    torch.float16: DType.F32,
    torch.bfloat16: DType.F32,
    torch.int64: DType.I64,
    torch.int32: DType.I32,
    torch.int16: DType.I16,
    torch.int8: DType.I8,
    torch.uint8: DType.I64,
    torch.bool: DType.BOOL,
}


def ir_dtype(dtype: torch.dtype, where: str) -> DType:
    if dtype not in TORCH_DTYPES:
        raise CimcError(f"tensors of dtype {dtype} are not supported", where)
    return TORCH_DTYPES[dtype]


def to_numpy(value: torch.Tensor, where: str) -> np.ndarray:
    """A torch constant as a numpy array of an IR dtype (floats become f32)."""
    dtype = ir_dtype(value.dtype, where)
    return np.ascontiguousarray(value.detach().to(torch.device("cpu")).numpy().astype(dtype.numpy))


def scalar_dtype(value: bool | int | float) -> DType:
    if isinstance(value, bool):
        return DType.BOOL
    return DType.F32 if isinstance(value, float) else DType.I64


def target_name(node: FxNode) -> str:
    target = node.target
    if isinstance(target, torch._ops.OpOverload | torch._ops.HigherOrderOperator):
        return str(target)
    return getattr(target, "__name__", str(target))


TORCH_DIR = os.path.dirname(torch.__file__)


def location(node: FxNode) -> str:
    """The module path and fx node name (`model.h.0.attn.c_attn/addmm`), plus the innermost
    model frame of its stack trace (file:line)."""
    name = scoped(fx_module_path(node.meta), node.name)
    trace = node.meta.get("stack_trace") or ""
    frames = re.findall(r'File "([^"]+)", line (\d+)', trace)
    user = [f for f in frames if TORCH_DIR not in f[0]]  # the model's line, not torch's
    if not frames:
        return name
    path, line = (user or frames)[-1]
    return f"{name} @ {os.path.basename(path)}:{line}"


def input_meaning(name: str, dtype: DType) -> str:
    """The meaning of a graph input, from its name (HF conventions) and dtype."""
    lowered = name.lower()
    for meaning in ("attention_mask", "position_ids", "token_type_ids"):
        if meaning in lowered:
            return meaning
    return "float" if dtype.is_float else "token_ids"


def contains_ref(value: Any) -> bool:
    found = False

    def visit(v: Any) -> Any:
        nonlocal found
        found = found or isinstance(v, Ref)
        return v

    map_aggregate(value, visit)
    return found


def check_supported(
    program: torch.export.ExportedProgram, table: Container[str], where: str
) -> None:
    """One error naming every aten op on run-time values that has no translation."""
    runtime = runtime_nodes(program)
    missing = []
    for node in program.graph.nodes:
        if node.op != "call_function" or node.name not in runtime:
            continue
        name = target_name(node)
        if name not in table and name not in IGNORED and node.target is not operator.getitem:
            missing.append((name, node))
    if missing:
        raise unsupported(missing)


def unsupported(missing: list[tuple[str, FxNode]]) -> CimcError:
    listed = "; ".join(f"{op} (fx node {n.name})" for op, n in missing)
    canonical = ", ".join(sorted(OPS))
    return CimcError(
        f"unsupported aten op(s) on run-time values: {listed}. The canonical ops are: "
        f"{canonical}; rewrite the model with these or ask for the op to be added",
        location(missing[0][1]),
    )


def fetch_attr(module: torch.nn.Module, target: str) -> Any:
    value: Any = module
    for part in target.split("."):
        value = getattr(value, part)
    return value


def runtime_nodes(program: torch.export.ExportedProgram) -> set[str]:
    """fx nodes whose value depends on user input values (not just their shapes)."""
    users = {
        s.arg.name for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT
    }
    runtime: set[str] = set()
    for node in program.graph.nodes:
        if node.op == "placeholder":
            if node.name in users and isinstance(node.meta.get("val"), torch.Tensor):
                runtime.add(node.name)
            continue
        if node.op != "call_function" or target_name(node) in SHAPE_ONLY:
            continue
        if any(a.name in runtime for a in node.all_input_nodes):
            runtime.add(node.name)
    return runtime
