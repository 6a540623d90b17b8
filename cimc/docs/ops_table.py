"""The supported-ops tables of README.md, read from the registries.

- canonical IR ops (`cimc.ir.ops.CANONICAL_OPS`) with the integer form the quantize pass
  gives them (`cimc.quant.quantize_rules.RULES`, data movement and mask logic kept as they
  are) and whether the backend emits assembly for that form (`cimc.backend.lower.table`);
- ONNX op types the importer translates on run-time values (`onnx_translate.HANDLERS`);
- torch.export / fx targets the torch importer translates (`torch_ops.TABLE`).
"""

from __future__ import annotations

import inspect
from collections import defaultdict

from cimc.backend.lower.table import LOWERINGS
from cimc.backend.plan.from_graph import DECLARED
from cimc.importers import onnx_import, torch_export  # noqa: F401  (register their handlers)
from cimc.importers.onnx_load import MAX_OPSET, MIN_OPSET
from cimc.importers.onnx_translate import HANDLERS
from cimc.importers.torch_fx import IGNORED, SHAPE_ONLY
from cimc.importers.torch_ops import TABLE
from cimc.ir.op_base import OPS, Op
from cimc.ir.ops import CANONICAL_OPS
from cimc.passes.conv_to_matmul import REWRITTEN_INTO
from cimc.quant import dialect as ops_quant
from cimc.quant.quantize_rules import INTEGER_PASSTHROUGH, RULES
from cimc.quant.scales import DATA_MOVEMENT

# Graph inputs and constants are structure, not computation: described in words.
_STRUCTURAL = {
    "input": "float inputs: `q.quantize` on the host; integer inputs as given",
    "constant": "folded into the plans of the ops that read it (weights, tables)",
}


def _q_ops(cls: type[Op]) -> list[str]:
    """The q-ops the quantize rule of `cls` emits (names its code refers to)."""
    rule = RULES[cls]
    names = inspect.getclosurevars(rule).globals
    found = sorted(
        v.NAME
        for v in names.values()
        if isinstance(v, type) and issubclass(v, Op) and v.__module__ == ops_quant.__name__
    )
    same = [n for n in found if n == f"q.{cls.NAME}"]  # a rule shared by two ops (norms)
    return same or found


def _integer_form(cls: type[Op]) -> tuple[str, list[str]]:
    """(how the quantize pass lowers `cls`, the op names the backend then sees)."""
    if cls.NAME in _STRUCTURAL:
        return _STRUCTURAL[cls.NAME], []
    if cls in REWRITTEN_INTO:
        into = REWRITTEN_INTO[cls]
        names = ", ".join(f"`{op.NAME}`" for op in into)
        lowered = [q for op in into for q in _integer_form(op)[1]]
        return f"rewritten by the `conv-to-matmul` pass into {names}", lowered
    integer = issubclass(cls, INTEGER_PASSTHROUGH)
    if cls in RULES:
        q_ops = _q_ops(cls)
        form = ", ".join(f"`{q}`" for q in q_ops)
        if integer:  # float values get the recipe, integer ones stay as they are
            return f"{form}; itself on integer values", [*q_ops, cls.NAME]
        return form, q_ops
    if issubclass(cls, DATA_MOVEMENT):
        return "itself, on integer codes (scale kept)", [cls.NAME]
    if integer:
        return "itself, on integer / bool values only (mask logic, position ids)", [cls.NAME]
    return "none (no integer recipe)", []


LOWERED_NAMES = frozenset(op.NAME for op in (*LOWERINGS, *DECLARED) if issubclass(op, Op))


def _assembly(cls: type[Op], lowered: list[str]) -> str:
    if issubclass(cls, DECLARED):
        return "free (declaration or re-view)"
    if not lowered:
        return "-"
    missing = [n for n in lowered if n not in LOWERED_NAMES]
    return "not yet" if missing else "yes"


def canonical_table() -> str:
    rows = ["| canonical op | integer form (quantize) | assembly (backend) |", "|---|---|---|"]
    for name in sorted(CANONICAL_OPS):
        cls = OPS[name]
        form, lowered = _integer_form(cls)
        rows.append(f"| `{name}` | {form} | {_assembly(cls, lowered)} |")
    return "\n".join(rows)


def _ticked(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def onnx_list() -> str:
    return (
        f"ONNX (default domain, opsets {MIN_OPSET}-{MAX_OPSET}), {len(HANDLERS)} op types "
        f"translated on run-time values: {_ticked(sorted(HANDLERS))}. Any node whose inputs "
        "are all constants (shape arithmetic, constant subgraphs) is evaluated at import "
        "(onnx.reference), whatever its op type; an op type not listed whose schema defines "
        "it as a function of other ops (opset 23's `Attention` and `RotaryEmbedding`, "
        "`Elu`, `HardSigmoid`...) is translated as that function's body, which the idiom "
        "passes map back onto canonical ops where one exists."
    )


def _grouped(targets: list[str]) -> list[str]:
    """`aten.add.Scalar`, `aten.add.Tensor` -> `aten.add.{Scalar,Tensor}`."""
    overloads: dict[str, list[str]] = defaultdict(list)
    for target in targets:
        base, dot, overload = target.rpartition(".")
        if target.startswith("aten.") and dot and base != "aten":
            overloads[base].append(overload)
        else:
            overloads[target] = []
    items = []
    for base in sorted(overloads):
        names = sorted(overloads[base])
        if len(names) > 1:
            items.append(f"{base}.{{{','.join(names)}}}")
        else:
            items.append(".".join([base, *names]))
    return items


def torch_list() -> str:
    handled = _grouped(sorted(TABLE))
    return (
        f"torch.export / fx, {len(TABLE)} targets (with overloads) translated: {_ticked(handled)}. "
        f"Read only for their shape: {_ticked(_grouped(sorted(SHAPE_ONLY)))}. "
        f"Ignored (run-time checks): {_ticked(_grouped(sorted(IGNORED)))}."
    )


def ops_markdown() -> str:
    """The whole generated block: canonical ops table, then the two importer lists."""
    return "\n\n".join((canonical_table(), onnx_list(), torch_list()))
