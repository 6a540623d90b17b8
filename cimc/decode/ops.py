"""The two q-ops of row-specialized decoder graphs (cimc/decode/specialize.py).

Both take the run-time positions of their rows (`cache_position`, [1, n] integers):

- `decode.rotary(x, pos)`: q.rotary whose table rows are looked up by position (the plan
  keeps the capacity-C tables), so one op serves prefill (n = P) and decode (n = 1).
- `decode.attention(q, k, v, pos[, mask])`: the n rows are `segments` (consecutive rows
  per sequence of the batch: one sequence's prompt in prefill, one row per sequence in a
  batched decode step). Appends each sequence's new K/V rows to its own KV cache (`.state`
  declarations, capacity C per sequence) at their positions, then attends from each
  sequence's queries over the first `windows[s]` slots of its cache (the filled positions,
  rounded up: the cost follows them, not C) with the allowed mask "key j <= position of
  the row" AND the user mask ([1, C] over cache slots, shared by the sequences). Same
  recipe and constants as q.attention. Every position of sequence s must be below
  `windows[s]`: the runner checks it (cimc/decode/programs.py).

They exist only in graphs compiled for the machine: the independent reference is the
integer golden on the capacity-C graph, which has no KV cache at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from cimc.ir.op_base import expect, expect_dtype, quiet, register_op
from cimc.ir.types import DType, TensorType
from cimc.quant.dialect import QOp, RunTimeMacroOperands, SharedStorage
from cimc.quant.plans import AttentionPlan, RotaryPlan

POSITION_DTYPES = (DType.I64, DType.I32, DType.I16, DType.I8)


def _positions(pos: TensorType, rows: int, what: str) -> None:
    expect_dtype(pos, POSITION_DTYPES, f"{what} positions")
    expect(pos.shape == (1, rows), f"{what} positions must be [1, {rows}], got {pos}")


@register_op
@dataclass(frozen=True, eq=False)
class DecodeRotary(QOp):
    """RoPE of x [B, H, n, D] (or [B, n, H*D]) with table rows chosen by position."""

    NAME = "decode.rotary"
    MIN_INPUTS = MAX_INPUTS = 2
    plan: RotaryPlan

    def shape(self, inputs: tuple[TensorType, ...]) -> tuple[int, ...]:
        x, pos = inputs
        expect(self.plan.cos.ndim == 2, "decode.rotary tables must be [C, D]")
        expect(x.shape[-1] == self.plan.cos.shape[1], "decode.rotary head dim vs table width")
        expect(x.rank == 4, f"decode.rotary operand must be [B, H, n, D], got {x}")
        _positions(pos, x.shape[2], "decode.rotary")
        return x.shape


@register_op
@dataclass(frozen=True, eq=False)
class DecodeAttention(QOp, RunTimeMacroOperands, SharedStorage):
    """Causal attention of n query rows over a KV cache of `capacity` positions."""

    NAME = "decode.attention"
    MIN_INPUTS = 4
    MAX_INPUTS = 5
    INT8_OPERANDS = CODE_OPERANDS = (0, 1, 2)
    plan: AttentionPlan
    capacity: int
    segments: tuple[int, ...] = quiet(())  # rows per sequence; () is one sequence of all
    windows: tuple[int, ...] = quiet(())  # cache slots attended per sequence; () is C each

    def rows_of(self, rows: int) -> tuple[int, ...]:
        """Rows per sequence, the default (one sequence) made explicit."""
        return self.segments or (rows,)

    def windows_of(self, rows: int) -> tuple[int, ...]:
        return self.windows or (self.capacity,) * len(self.rows_of(rows))

    def macro_operands(self, inputs: tuple[TensorType, ...]) -> tuple[tuple[int, int], ...]:
        """K^T [D x C] and V [C x Dv] of one head: room for the whole KV cache, whatever the
        windows (so programs of every window map their weights alike)."""
        d, dv = inputs[0].shape[-1], inputs[2].shape[-1]
        return ((d, self.capacity), (self.capacity, dv))

    def shape(self, inputs: tuple[TensorType, ...]) -> tuple[int, ...]:
        q, k, v, pos = inputs[:4]
        expect(q.rank == k.rank == v.rank == 4, "decode.attention operands must be [B, H, n, D]")
        expect(q.shape[0] == k.shape[0] == v.shape[0] == 1, "decode.attention runs batch 1")
        expect(q.shape[1] % k.shape[1] == 0, f"{q.shape[1]} query heads vs {k.shape[1]} kv")
        expect(k.shape[1] == v.shape[1], "decode.attention k and v heads differ")
        expect(q.shape[2] == k.shape[2] == v.shape[2], "decode.attention rows differ")
        expect(q.shape[-1] == k.shape[-1], "decode.attention q and k dims differ")
        segments, windows = self.rows_of(q.shape[2]), self.windows_of(q.shape[2])
        expect(sum(segments) == q.shape[2], f"segments {segments} do not add up to {q.shape[2]}")
        expect(len(windows) == len(segments), "decode.attention needs one window per segment")
        expect(
            all(1 <= r <= self.capacity for r in segments),
            f"decode.attention segments {segments} exceed the capacity {self.capacity}",
        )
        expect(
            all(r <= w <= self.capacity for r, w in zip(segments, windows, strict=True)),
            f"decode.attention windows {windows} must hold their segments {segments} and "
            f"stay within the capacity {self.capacity}",
        )
        _positions(pos, q.shape[2], "decode.attention")
        if len(inputs) == 5:
            expect_dtype(inputs[4], (DType.BOOL,), "decode.attention mask")
            expect(
                inputs[4].numel == self.capacity,
                f"decode.attention mask must cover the {self.capacity} cache slots",
            )
        return (*q.shape[:3], v.shape[3])

    def shared_storage(self, node: str, inputs: tuple[TensorType, ...]) -> dict[str, int]:
        """The K and V caches (one per sequence) and the allowed-positions mask
        (cimc/decode/lower.py), and the causal table every layer shares."""
        (_, hkv, n, d), dv, c = inputs[1].shape, inputs[2].shape[-1], self.capacity
        seqs = len(self.rows_of(n))
        return {
            f"{node}.k_cache": seqs * hkv * c * d,
            f"{node}.v_cache": seqs * hkv * c * dv,
            f"{node}.allowed": n * c,
            "decode.causal": c * c,
        }
