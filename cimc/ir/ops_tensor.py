"""Ops that create, move or re-view data: input, constant, cast, embedding and shape ops."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from cimc.errors import CimcError
from cimc.ir.op_base import (
    INTEGER,
    Op,
    broadcasts_to,
    expect,
    expect_dtype,
    expect_normalized_axis,
    normalize_axis,
    register_op,
    same_dtype,
)
from cimc.ir.types import DType, TensorType

INPUT_MEANINGS = ("float", "token_ids", "attention_mask", "position_ids", "token_type_ids")


@register_op
@dataclass(frozen=True)
class Input(Op):
    """A graph input; `meaning` drives default inputs and calibration data."""

    NAME = "input"
    type: TensorType
    meaning: str = "float"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.meaning not in INPUT_MEANINGS:
            raise CimcError(
                f"input meaning '{self.meaning}' is not one of {', '.join(INPUT_MEANINGS)}"
            )

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        return self.type


@register_op
@dataclass(frozen=True, eq=False)
class Constant(Op):
    """A constant tensor (weights, masks, tables). The array is kept read-only."""

    NAME = "constant"
    value: np.ndarray

    def __post_init__(self) -> None:
        super().__post_init__()
        DType.from_numpy(self.value.dtype)  # refuses float64 & co with a clear message
        view = self.value.view()
        view.flags.writeable = False  # weights are shared between graphs: never mutate in place
        object.__setattr__(self, "value", view)

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        return TensorType.of(self.value)

    @cached_property
    def digest(self) -> str:
        """sha256 of dtype, shape and bytes: equal digests mean equal constants."""
        data = np.ascontiguousarray(self.value)
        h = hashlib.sha256(f"{data.dtype.name}{data.shape}".encode())
        h.update(data.reshape(-1).view(np.uint8).data)  # the bytes in place, not a copy
        return h.hexdigest()

    def key(self) -> Hashable:
        return (self.NAME, self.digest)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Constant) and self.digest == other.digest

    def __hash__(self) -> int:
        return hash(self.digest)


@register_op
@dataclass(frozen=True)
class Cast(Op):
    NAME = "cast"
    MIN_INPUTS = MAX_INPUTS = 1
    dtype: DType

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        return TensorType(inputs[0].shape, self.dtype)


@register_op
@dataclass(frozen=True)
class Embedding(Op):
    """table[ids]: ids[...] integer, table[V, D] constant -> [..., D]."""

    NAME = "embedding"
    MIN_INPUTS = MAX_INPUTS = 2
    CONSTANT_OPERANDS = (1,)

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        ids, table = inputs
        expect_dtype(ids, INTEGER, "embedding ids")
        expect(table.rank == 2, f"embedding table must be [V, D], got {table}")
        return TensorType((*ids.shape, table.shape[1]), table.dtype)


@register_op
@dataclass(frozen=True)
class Reshape(Op):
    """Fully static reshape; `normalize` resolves one -1 for importers."""

    NAME = "reshape"
    MIN_INPUTS = MAX_INPUTS = 1
    shape: tuple[int, ...]

    def normalize(self, inputs: tuple[TensorType, ...]) -> Op:
        if self.shape.count(-1) != 1:
            return self
        known = math.prod(d for d in self.shape if d != -1)
        expect(known > 0 and inputs[0].numel % known == 0, self._mismatch(inputs[0]))
        return Reshape(tuple(inputs[0].numel // known if d == -1 else d for d in self.shape))

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        x = inputs[0]
        expect(all(d >= 0 for d in self.shape), f"reshape shape {list(self.shape)} must be static")
        expect(math.prod(self.shape) == x.numel, self._mismatch(x))
        return TensorType(self.shape, x.dtype)

    def _mismatch(self, x: TensorType) -> str:
        return f"cannot reshape {x} ({x.numel} elements) to {list(self.shape)}"


@register_op
@dataclass(frozen=True)
class Transpose(Op):
    NAME = "transpose"
    MIN_INPUTS = MAX_INPUTS = 1
    perm: tuple[int, ...]

    def normalize(self, inputs: tuple[TensorType, ...]) -> Op:
        rank = inputs[0].rank
        return Transpose(tuple(normalize_axis(p, rank, "perm entry") for p in self.perm))

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        x = inputs[0]
        expect(
            sorted(self.perm) == list(range(x.rank)),
            f"perm {list(self.perm)} is not a permutation of the {x.rank} axes of {x}",
        )
        return TensorType(tuple(x.shape[p] for p in self.perm), x.dtype)

    def moves_unit_axes_only(self, shape: tuple[int, ...]) -> bool:
        """Whether the axes longer than 1 keep their order: then it is a reshape."""
        kept = [p for p in self.perm if shape[p] != 1]
        return kept == sorted(kept)


@register_op
@dataclass(frozen=True)
class Slice(Op):
    """x[start:stop:step] along one axis; normalized to 0 <= start <= stop <= dim, step >= 1."""

    NAME = "slice"
    MIN_INPUTS = MAX_INPUTS = 1
    axis: int
    start: int
    stop: int
    step: int = 1

    def normalize(self, inputs: tuple[TensorType, ...]) -> Op:
        x = inputs[0]
        axis = normalize_axis(self.axis, x.rank)
        expect(self.step >= 1, f"slice step must be >= 1, got {self.step}")
        start, stop, _ = slice(self.start, self.stop, self.step).indices(x.shape[axis])
        return Slice(axis, start, max(start, stop), self.step)

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        x = inputs[0]
        expect_normalized_axis(self.axis, x.rank)
        dim = x.shape[self.axis]
        expect(
            0 <= self.start <= self.stop <= dim and self.step >= 1,
            f"slice {self.start}:{self.stop}:{self.step} not normalized for dim {dim} of {x}",
        )
        shape = list(x.shape)
        shape[self.axis] = len(range(self.start, self.stop, self.step))
        return TensorType(tuple(shape), x.dtype)


@register_op
@dataclass(frozen=True)
class Concat(Op):
    NAME = "concat"
    MIN_INPUTS = 1
    MAX_INPUTS = None
    axis: int

    def normalize(self, inputs: tuple[TensorType, ...]) -> Op:
        return Concat(normalize_axis(self.axis, inputs[0].rank))

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        first = inputs[0]
        dtype = same_dtype(inputs, "concat operands")
        expect_normalized_axis(self.axis, first.rank)
        for t in inputs[1:]:
            rest = [d for i, d in enumerate(t.shape) if i != self.axis]
            first_rest = [d for i, d in enumerate(first.shape) if i != self.axis]
            expect(
                t.rank == first.rank and rest == first_rest,
                f"concat on axis {self.axis} needs equal other dims, got {first} and {t}",
            )
        shape = list(first.shape)
        shape[self.axis] = sum(t.shape[self.axis] for t in inputs)
        return TensorType(tuple(shape), dtype)


@register_op
@dataclass(frozen=True)
class Gather(Op):
    """Select one index along `axis`, dropping that axis (last token, CLS token)."""

    NAME = "gather"
    MIN_INPUTS = MAX_INPUTS = 1
    axis: int
    index: int

    def normalize(self, inputs: tuple[TensorType, ...]) -> Op:
        x = inputs[0]
        axis = normalize_axis(self.axis, x.rank)
        return Gather(axis, normalize_axis(self.index, x.shape[axis], "index", "dimension"))

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        x = inputs[0]
        expect_normalized_axis(self.axis, x.rank)
        expect_normalized_axis(self.index, x.shape[self.axis], "index")
        shape = x.shape[: self.axis] + x.shape[self.axis + 1 :]
        return TensorType(shape, x.dtype)


@register_op
@dataclass(frozen=True)
class Expand(Op):
    """numpy-style broadcast of x to `shape`."""

    NAME = "expand"
    MIN_INPUTS = MAX_INPUTS = 1
    shape: tuple[int, ...]

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        x = inputs[0]
        expect(
            broadcasts_to(x.shape, self.shape),
            f"cannot expand {x} to {list(self.shape)}",
        )
        return TensorType(self.shape, x.dtype)
