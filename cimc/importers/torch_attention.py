"""aten.scaled_dot_product_attention -> the canonical `attention` op.

Recognized on the way: GQA's repeat_kv (unsqueeze/expand/reshape of K and V) is undone so
attention keeps Hkv < Hq; additive float masks become boolean; a constant causal triangle
in the mask becomes `causal=True`; broadcasts of the mask are dropped (attention
broadcasts it).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch.fx import Node as FxNode

from cimc.importers.torch_builder import Builder
from cimc.importers.torch_fx import Ref
from cimc.importers.torch_ops import bind, handles
from cimc.importers.torch_translate import Translator
from cimc.ir import DType
from cimc.ir.ops import (
    Add,
    Attention,
    Cast,
    Expand,
    LogicalAnd,
    LogicalNot,
    Mul,
    Reshape,
    Sub,
    Transpose,
    Where,
)

# Additive mask entries at or below this count as "masked" (HF uses finfo.min or -inf).
MASKED = -1e4


@handles("aten.scaled_dot_product_attention.default")
def sdpa(t: Translator, node: FxNode) -> Ref:
    a = bind(node)
    if float(t.value(a["dropout_p"]) or 0.0) != 0.0:
        raise t.error("attention dropout must be 0: export the model in eval mode")
    q, k, v = (t.name(a[n], DType.F32) for n in ("query", "key", "value"))
    for name, what in ((q, "query"), (k, "key"), (v, "value")):
        if t.b.type_of(name).rank != 4:
            raise t.error(f"attention {what} must be [B, H, S, D], got {t.b.type_of(name)}")
    k, v = unrepeat_pair(t, k, v)
    sq, sk, d = t.b.shape(q)[2], t.b.shape(k)[2], t.b.shape(q)[3]
    scale = t.value(a["scale"])
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    causal = bool(t.value(a["is_causal"]))
    mask, bias = None, None
    if a["attn_mask"] is not None:
        mask, bias = mask_and_bias(t, t.name(a["attn_mask"]))
    if causal and sq != sk:  # torch aligns is_causal top-left; the contract bottom-right
        tri = np.tril(np.ones((sq, sk), dtype=bool))
        extra = t.b.constant(tri, t.fresh("causal"))
        mask = extra if mask is None else t.emit(LogicalAnd(), [mask, extra], "mask").name
        causal = False
    if mask is not None:
        mask, causal = strip_causal(t, mask, causal, sq, sk)
    operands = [q, k, v] if mask is None else [q, k, v, mask]
    if bias is not None:
        operands.append(bias)
    return t.emit(Attention(scale=scale, causal=causal, bias=bias is not None), operands)


# ---- GQA ------------------------------------------------------------------------------


def unrepeat_pair(t: Translator, k: str, v: str) -> tuple[str, str]:
    """K and V before repeat_kv, when both were repeated the same way."""
    k_heads, v_heads = repeated_source(t.b, k), repeated_source(t.b, v)
    if k_heads is None or v_heads is None or t.b.shape(k_heads)[1] != t.b.shape(v_heads)[1]:
        return k, v
    return unsplit(t, k_heads, "k"), unsplit(t, v_heads, "v")


def repeated_source(b: Builder, name: str) -> str | None:
    """y [B,H,1,S,D] when `name` is reshape(expand(y, [B,H,r,S,D]), [B,H*r,S,D])."""
    node = b.node(name)
    if not isinstance(node.op, Reshape):
        return None
    expanded = b.node(node.inputs[0])
    if not isinstance(expanded.op, Expand) or len(expanded.op.shape) != 5:
        return None
    y = expanded.inputs[0]
    bsz, heads, reps, seq, dim = expanded.op.shape
    if b.shape(y) != (bsz, heads, 1, seq, dim):
        return None
    return y if node.op.shape == (bsz, heads * reps, seq, dim) else None


def unsplit(t: Translator, y: str, what: str) -> str:
    """y [B,H,1,S,D] as [B,H,S,D]: the value the unsqueeze views when it has that shape,
    else a reshape of it."""
    bsz, heads, _, seq, dim = t.b.shape(y)
    source = viewed(t.b, y)
    if source != y and t.b.shape(source) == (bsz, heads, seq, dim):
        return source
    return t.emit(Reshape((bsz, heads, seq, dim)), [source], what).name


def viewed(b: Builder, name: str) -> str:
    """The value `name` is a view of, through reshapes and transposes that move only unit
    axes (reshapes too), so the aten spelling of an unsqueeze does not matter."""
    node = b.node(name)
    while isinstance(node.op, Reshape) or (
        isinstance(node.op, Transpose) and node.op.moves_unit_axes_only(b.shape(node.inputs[0]))
    ):
        node = b.node(node.inputs[0])
    return node.name


# ---- masks ----------------------------------------------------------------------------


def boolean_mask(t: Translator, mask: str) -> str:
    """The mask as booleans (True = may attend); additive float masks are converted."""
    dtype = t.b.type_of(mask).dtype
    if dtype == DType.BOOL:
        return mask
    if not dtype.is_float:
        raise t.error(f"attention mask must be bool or float, got {t.b.type_of(mask)}")
    converted = additive_to_bool(t, mask)
    if converted is None:
        raise t.error(
            "attention mask is a float mask that is not 0 / -inf (e.g. ALiBi biases); "
            "only boolean or additive 0/-inf masks are supported"
        )
    return converted


def mask_and_bias(t: Translator, mask: str) -> tuple[str | None, str | None]:
    """A float attn_mask as (boolean mask, additive bias): the terms of its sum that are
    0 / -inf masks become the mask, the others (T5's relative position bias, ALiBi) the
    bias; a constant term holding both is split entry by entry."""
    if t.b.type_of(mask).dtype == DType.BOOL or additive_to_bool(t, mask) is not None:
        return boolean_mask(t, mask), None
    if not t.b.type_of(mask).dtype.is_float:
        raise t.error(f"attention mask must be bool or float, got {t.b.type_of(mask)}")
    masks: list[str] = []
    biases: list[str] = []
    terms = add_terms(t.b, mask)
    while terms:
        term = terms.pop(0)
        value = t.b.const(term)
        guarded = masked_where(t, term)
        if guarded is not None:  # where(m, x, -inf) = x + where(m, 0, -inf)
            masks.append(guarded[0])
            terms.extend(add_terms(t.b, guarded[1]))
            continue
        if value is not None and np.any(value <= MASKED) and not np.all(value <= MASKED):
            keep = value > MASKED
            masks.append(t.b.constant(keep, t.fresh("keep")))
            finite = np.where(keep, value, 0).astype(value.dtype)
            biases.append(t.b.constant(finite, t.fresh("bias")))
            continue
        converted = additive_to_bool(t, term)
        if converted is not None:
            masks.append(converted)
        elif value is not None and np.any(value <= MASKED):
            raise t.error("attention bias entries at -inf must come with a mask")
        else:
            biases.append(term)
    result = masks[0] if masks else None
    for other in masks[1:]:
        result = t.emit(LogicalAnd(), [masks[0] if result is None else result, other], "mask").name
    bias = biases[0] if biases else None
    for other in biases[1:]:
        bias = t.emit(Add(), [biases[0] if bias is None else bias, other], "bias").name
    return result, bias


def masked_where(t: Translator, name: str) -> tuple[str, str] | None:
    """(keep, x) when `name` is where(keep, x, -inf) or where(not keep, -inf, x)."""
    node = t.b.node(name)
    if not isinstance(node.op, Where):
        return None
    cond, yes, no = node.inputs
    if is_masked_value(t.b, no) and not is_masked_value(t.b, yes):
        return cond, yes
    if is_masked_value(t.b, yes) and not is_masked_value(t.b, no):
        return t.emit(LogicalNot(), [cond], "keep").name, no
    return None


def add_terms(b: Builder, name: str) -> list[str]:
    """The operands of a tree of float adds (the value itself when it is not an add)."""
    node = b.node(name)
    if isinstance(node.op, Add) and b.type_of(name).dtype.is_float:
        return [term for i in node.inputs for term in add_terms(b, i)]
    return [name]


def additive_to_bool(t: Translator, mask: str) -> str | None:
    """A boolean expression equal to `mask > MASKED`, when the mask's structure shows it."""
    b = t.b
    value = b.const(mask)
    if value is not None:
        if not np.all((value == 0) | (value <= MASKED)):
            return None
        return b.constant(value == 0, f"{mask}_bool")
    node = b.node(mask)
    if isinstance(node.op, Expand | Reshape):
        inner = additive_to_bool(t, node.inputs[0])
        return None if inner is None else t.emit(node.op, [inner], "mask").name
    if isinstance(node.op, Where):
        return where_mask(t, node.inputs)
    if isinstance(node.op, Add):
        parts = [additive_to_bool(t, i) for i in node.inputs]
        if any(p is None for p in parts):
            return None
        return t.emit(LogicalAnd(), [p for p in parts if p is not None], "mask").name
    if isinstance(node.op, Mul):
        return scaled_keep_mask(t, node.inputs)
    return None


def where_mask(t: Translator, inputs: tuple[str, ...]) -> str | None:
    """where(c, 0, -inf) -> c ; where(c, -inf, 0) -> not c."""
    cond, yes, no = inputs
    b = t.b
    if b.is_scalar(yes, 0.0) and is_masked_value(b, no):
        return cond
    if is_masked_value(b, yes) and b.is_scalar(no, 0.0):
        return t.emit(LogicalNot(), [cond], "mask").name
    return None


def scaled_keep_mask(t: Translator, inputs: tuple[str, ...]) -> str | None:
    """(1 - m) * min_float -> m != 0, for m a cast of a bool or integer tensor."""
    b = t.b
    for k in range(2):
        inverted, scale = b.node(inputs[k]), inputs[1 - k]
        if not is_masked_value(b, scale) or not isinstance(inverted.op, Sub):
            continue
        one, m = inverted.inputs
        if not b.is_scalar(one, 1.0) or not isinstance(b.node(m).op, Cast):
            continue
        source = b.node(m).inputs[0]
        if b.type_of(source).dtype == DType.BOOL:
            return source
        if b.type_of(source).dtype.is_int:
            return t.emit(Cast(DType.BOOL), [source], "mask").name
    return None


def is_masked_value(b: Builder, name: str) -> bool:
    value = b.const(name)
    return value is not None and value.size > 0 and bool(np.all(value <= MASKED))


def strip_causal(
    t: Translator, mask: str, causal: bool, sq: int, sk: int
) -> tuple[str | None, bool]:
    """Move a constant causal triangle out of the mask into `causal`; drop all-True parts
    and broadcasts."""
    b = t.b
    leaves = and_leaves(b, mask)
    pattern = causal_pattern(sq, sk)
    kept: list[str] = []
    for leaf in leaves:
        value = b.const(leaf)
        if value is not None and broadcast_equal(value, pattern):
            causal = True
        elif value is None or not value.all():
            kept.append(leaf)
    if not kept:
        return None, causal
    if kept == leaves and len(leaves) == 1:
        return leaves[0], causal
    result = kept[0]
    for other in kept[1:]:
        result = t.emit(LogicalAnd(), [result, other], "mask").name
    return result, causal


def and_leaves(b: Builder, name: str) -> list[str]:
    """Operands of a tree of logical_and, looking through broadcasts."""
    node = b.node(name)
    if isinstance(node.op, Expand):
        return and_leaves(b, node.inputs[0])
    if isinstance(node.op, LogicalAnd):
        return [leaf for i in node.inputs for leaf in and_leaves(b, i)]
    return [name]


def causal_pattern(sq: int, sk: int) -> np.ndarray:
    """True where key j may be seen by query i: j <= i + (sk - sq)."""
    return np.tril(np.ones((sq, sk), dtype=bool), k=sk - sq)


def broadcast_equal(value: Any, pattern: np.ndarray) -> bool:
    """Whether a constant mask is `pattern` on its last two axes, for every leading index."""
    if value.dtype != np.bool_ or value.ndim < 2:
        return False
    try:
        full = np.broadcast_to(value, (*value.shape[:-2], *pattern.shape))
    except ValueError:
        return False
    return bool(np.all(full == pattern))
