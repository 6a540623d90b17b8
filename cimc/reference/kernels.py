"""One float32 torch kernel per canonical op (the float reference's semantics).

`KERNELS` maps an op class to `kernel(op, operands) -> tensor`. `input` and `constant` have
no kernel: the executor supplies their values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from cimc.ir import ops
from cimc.ir.op_base import Op
from cimc.ir.types import DType
from cimc.reference import window_kernels

Kernel = Callable[[Any, list[torch.Tensor]], torch.Tensor]

TORCH_DTYPES: dict[DType, torch.dtype] = {
    DType.F32: torch.float32,
    DType.I64: torch.int64,
    DType.I32: torch.int32,
    DType.I16: torch.int16,
    DType.I8: torch.int8,
    DType.BOOL: torch.bool,
}


def attention(op: ops.Attention, args: list[torch.Tensor]) -> torch.Tensor:
    """Explicit softmax attention: GQA by repeating kv heads, fully masked rows -> zeros."""
    q, k, v = args[:3]
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    sq, sk = q.shape[2], k.shape[2]
    allowed = torch.ones(sq, sk, dtype=torch.bool)
    if op.causal:
        allowed = torch.ones(sq, sk, dtype=torch.bool).tril(diagonal=sk - sq)
    m = op.mask_index(len(args))
    if m is not None:
        allowed = allowed & args[m]
    scores = torch.matmul(q, k.transpose(-1, -2)) * op.scale
    if op.bias:
        scores = scores + args[-1]
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    probs = torch.where(allowed, probs, torch.zeros((), dtype=probs.dtype))  # NaN rows -> 0
    return torch.matmul(probs, v)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def rotary(op: ops.Rotary, args: list[torch.Tensor]) -> torch.Tensor:
    x, cos, sin = args
    return x * cos + rotate_half(x) * sin


def rms_norm(op: ops.RmsNorm, args: list[torch.Tensor]) -> torch.Tensor:
    x, gamma = args
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + op.eps) * gamma


def layer_norm(op: ops.LayerNorm, args: list[torch.Tensor]) -> torch.Tensor:
    x, gamma, beta = args
    return F.layer_norm(x, (x.shape[-1],), gamma, beta, op.eps)


def linear(op: ops.Linear, args: list[torch.Tensor]) -> torch.Tensor:
    out = torch.matmul(args[0], args[1])
    return out + args[2] if len(args) == 3 else out


def divide(op: Any, args: list[torch.Tensor]) -> torch.Tensor:
    a, b = args
    if a.dtype.is_floating_point:
        return a / b
    return torch.div(a, b, rounding_mode="trunc")  # ONNX integer Div truncates


def reduce(fn: Callable[..., torch.Tensor]) -> Kernel:
    def kernel(op: Any, args: list[torch.Tensor]) -> torch.Tensor:
        out = fn(args[0], dim=list(op.axes), keepdim=op.keepdim)
        return out.to(args[0].dtype)  # torch sums small ints into int64

    return kernel


def slice_(op: ops.Slice, args: list[torch.Tensor]) -> torch.Tensor:
    index: list[Any] = [slice(None)] * args[0].dim()
    index[op.axis] = slice(op.start, op.stop, op.step)
    return args[0][tuple(index)]


def embedding(op: ops.Embedding, args: list[torch.Tensor]) -> torch.Tensor:
    ids, table = args
    vocab = table.shape[0]
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
        raise ValueError(f"token id {bad} is outside the embedding table [0, {vocab})")
    return F.embedding(ids.long(), table)


def cumsum(op: ops.CumSum, args: list[torch.Tensor]) -> torch.Tensor:
    """ONNX CumSum's exclusive / reverse variants; integers sum in int64 and keep their
    dtype (as ONNX does; torch.cumsum would widen int32 to int64)."""
    x = args[0]
    if op.reverse:
        x = x.flip(op.axis)
    if op.exclusive:  # the running sum of the elements before: x shifted by one, from 0
        before = x.narrow(op.axis, 0, x.shape[op.axis] - 1)
        x = torch.cat([torch.zeros_like(x.narrow(op.axis, 0, 1)), before], op.axis)
    y = torch.cumsum(x, dim=op.axis, dtype=None if x.dtype.is_floating_point else torch.int64)
    if op.reverse:
        y = y.flip(op.axis)
    return y.to(args[0].dtype)


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> Kernel:
    return lambda op, args: fn(args[0])


def _binary(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Kernel:
    return lambda op, args: fn(args[0], args[1])


KERNELS: dict[type[Op], Kernel] = {
    ops.Linear: linear,
    ops.Conv: window_kernels.conv,
    ops.Pool: window_kernels.pool,
    ops.Im2col: window_kernels.im2col,
    ops.Clip: lambda op, a: torch.clamp(a[0], op.lo, op.hi),
    ops.MatMul: _binary(torch.matmul),
    ops.Attention: attention,
    ops.Softmax: lambda op, a: torch.softmax(a[0], dim=op.axis),
    ops.LayerNorm: layer_norm,
    ops.RmsNorm: rms_norm,
    ops.Gelu: lambda op, a: F.gelu(a[0], approximate=op.approximate),
    ops.Silu: _unary(F.silu),
    ops.Relu: _unary(torch.relu),
    ops.Tanh: _unary(torch.tanh),
    ops.Sigmoid: _unary(torch.sigmoid),
    ops.Erf: _unary(torch.erf),
    ops.Exp: _unary(torch.exp),
    ops.Log: _unary(torch.log),
    ops.Abs: _unary(torch.abs),
    ops.LogSoftmax: lambda op, a: torch.log_softmax(a[0], dim=op.axis),
    ops.Maximum: _binary(torch.maximum),
    ops.Minimum: _binary(torch.minimum),
    ops.Neg: _unary(torch.neg),
    ops.Sqrt: _unary(torch.sqrt),
    ops.Rsqrt: _unary(torch.rsqrt),
    ops.Reciprocal: _unary(torch.reciprocal),
    ops.Pow: lambda op, a: torch.pow(a[0], op.exponent),
    ops.Add: _binary(torch.add),
    ops.Sub: _binary(torch.sub),
    ops.Mul: _binary(torch.mul),
    ops.Div: divide,
    ops.Equal: _binary(torch.eq),
    ops.Less: _binary(torch.lt),
    ops.Greater: _binary(torch.gt),
    ops.LogicalNot: _unary(torch.logical_not),
    ops.LogicalAnd: _binary(torch.logical_and),
    ops.LogicalOr: _binary(torch.logical_or),
    ops.Where: lambda op, a: torch.where(a[0], a[1], a[2]),
    ops.Cast: lambda op, a: a[0].to(TORCH_DTYPES[op.dtype]),
    ops.Embedding: embedding,
    ops.CumSum: cumsum,
    ops.Rotary: rotary,
    ops.ReduceMean: reduce(torch.mean),
    ops.ReduceSum: reduce(torch.sum),
    ops.ReduceMax: reduce(torch.amax),
    ops.ReduceMin: reduce(torch.amin),
    ops.Reshape: lambda op, a: a[0].reshape(op.shape),
    ops.Transpose: lambda op, a: a[0].permute(op.perm),
    ops.Slice: slice_,
    ops.Concat: lambda op, a: torch.cat(a, dim=op.axis),
    ops.Gather: lambda op, a: a[0].select(op.axis, op.index),
    ops.Expand: lambda op, a: a[0].expand(op.shape),
}
