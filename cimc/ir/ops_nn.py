"""The ops that carry the MACs (linear, matmul, attention) and rotary embedding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cimc.ir.op_base import (
    NUMERIC,
    Op,
    broadcast,
    broadcasts_to,
    expect,
    expect_dtype,
    expect_float,
    register_op,
    same_dtype,
)
from cimc.ir.types import DType, TensorType


@register_op
@dataclass(frozen=True)
class Linear(Op):
    """x[..., K] @ w[K, N] (+ b[N]); w is stored [K, N], the CIM layout."""

    NAME = "linear"
    MIN_INPUTS = 2
    MAX_INPUTS = 3
    CONSTANT_OPERANDS = (1, 2)

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        x, w = inputs[0], inputs[1]
        for t, what in zip(inputs, ("input", "weight", "bias"), strict=False):
            expect_float(t, f"linear {what}")
        expect(x.rank >= 1, f"linear input must have a feature axis, got {x}")
        expect(w.rank == 2, f"linear weight must be [K, N], got {w}")
        k, n = w.shape
        expect(x.shape[-1] == k, f"linear input {x} has K={x.shape[-1]} but weight {w} has K={k}")
        if len(inputs) == 3:
            expect(inputs[2].shape == (n,), f"linear bias must be [{n}], got {inputs[2]}")
        return TensorType((*x.shape[:-1], n), x.dtype)


@register_op
@dataclass(frozen=True)
class MatMul(Op):
    """a[..., M, K] @ b[..., K, N] of two run-time values, batch dims broadcast."""

    NAME = "matmul"
    MIN_INPUTS = MAX_INPUTS = 2

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        a, b = inputs
        dtype = same_dtype(inputs, "matmul operands")
        expect_dtype(a, NUMERIC, "matmul operand")
        expect(a.rank >= 2 and b.rank >= 2, f"matmul operands must have rank >= 2, got {a}, {b}")
        expect(a.shape[-1] == b.shape[-2], f"matmul K mismatch: {a} @ {b}")
        batch = broadcast(a.shape[:-2], b.shape[:-2])
        return TensorType((*batch, a.shape[-2], b.shape[-1]), dtype)


def attention_mask_index(bias: bool, n_inputs: int) -> int | None:
    """Where an attention's bool mask is among its `n_inputs` operands (None: no mask):
    q, k, v, [mask], [bias] (the bias, when the op has one, is always last)."""
    return 3 if n_inputs - int(bias) == 4 else None


def attention_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """`bias` prints only when set: IR text without biases reads and prints as before."""
    if not attributes.get("bias"):
        attributes.pop("bias", None)
    return attributes


@register_op
@dataclass(frozen=True)
class Attention(Op):
    """softmax(q k^T * scale + masking) v with GQA, optional bool mask and causal masking.

    q[B, Hq, Sq, D], k[B, Hkv, Sk, D], v[B, Hkv, Sk, Dv], mask broadcastable to
    [B, Hq, Sq, Sk] (True = may attend). Causal: key j allowed iff j <= i + (Sk - Sq).
    A fully masked row gives zeros. With `bias`, the last operand is a float additive bias
    broadcastable to [B, Hq, Sq, Sk], added to the scaled scores before the softmax (T5's
    relative position bias, ALiBi): softmax(q k^T * scale + bias) where allowed.
    """

    NAME = "attention"
    MIN_INPUTS = 3
    MAX_INPUTS = 5
    scale: float
    causal: bool = False
    bias: bool = False

    def mask_index(self, n_inputs: int) -> int | None:
        return attention_mask_index(self.bias, n_inputs)

    def attributes(self) -> dict[str, Any]:
        return attention_attributes(super().attributes())

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        q, k, v = inputs[:3]
        for t, what in zip(inputs, "qkv", strict=False):
            expect_float(t, f"attention {what}")
            expect(t.rank == 4, f"attention {what} must be [B, H, S, D], got {t}")
        b, hq, sq, d = q.shape
        expect(k.shape[0] == b and v.shape[0] == b, f"attention batch differs: {q}, {k}, {v}")
        expect(k.shape[3] == d, f"attention q and k head sizes differ: {q}, {k}")
        expect(k.shape[1:3] == v.shape[1:3], f"attention k and v heads/length differ: {k}, {v}")
        hkv, sk = k.shape[1], k.shape[2]
        expect(hkv > 0 and hq % hkv == 0, f"attention needs Hq % Hkv == 0, got {hq} and {hkv}")
        expect(
            len(inputs) - int(self.bias) in (3, 4),
            f"attention takes q, k, v, an optional mask{' and the bias' if self.bias else ''}",
        )
        m = self.mask_index(len(inputs))
        if m is not None:
            mask = inputs[m]
            expect_dtype(mask, (DType.BOOL,), "attention mask")
            expect(
                mask.rank <= 4 and broadcasts_to(mask.shape, (b, hq, sq, sk)),
                f"attention mask {mask} does not broadcast to [{b}, {hq}, {sq}, {sk}]",
            )
        if self.bias:
            bias = inputs[-1]
            expect_float(bias, "attention bias")
            expect(
                bias.rank <= 4 and broadcasts_to(bias.shape, (b, hq, sq, sk)),
                f"attention bias {bias} does not broadcast to [{b}, {hq}, {sq}, {sk}]",
            )
        return TensorType((b, hq, sq, v.shape[3]), q.dtype)


@register_op
@dataclass(frozen=True)
class Rotary(Op):
    """x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x[..., D/2:], x[..., :D/2])."""

    NAME = "rotary"
    MIN_INPUTS = MAX_INPUTS = 3

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        x, cos, sin = inputs
        for t, what in zip(inputs, ("input", "cos", "sin"), strict=True):
            expect_float(t, f"rotary {what}")
        expect(x.rank >= 1 and x.shape[-1] % 2 == 0, f"rotary needs an even last dim, got {x}")
        for t, what in ((cos, "cos"), (sin, "sin")):
            expect(broadcasts_to(t.shape, x.shape), f"rotary {what} {t} does not broadcast to {x}")
        return x
