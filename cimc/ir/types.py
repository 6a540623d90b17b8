"""Element types and static tensor types of the graph IR."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from cimc.errors import CimcError


class DType(enum.Enum):
    """Element type of a tensor; the value is the spelling used in IR text (``f32``)."""

    F32 = "f32"
    I64 = "i64"
    I32 = "i32"
    I16 = "i16"
    I8 = "i8"
    BOOL = "bool"

    def __str__(self) -> str:
        return self.value

    @property
    def numpy(self) -> np.dtype:
        return np.dtype(_TO_NUMPY[self])

    @property
    def is_float(self) -> bool:
        return self is DType.F32

    @property
    def is_int(self) -> bool:
        return self in (DType.I64, DType.I32, DType.I16, DType.I8)

    @property
    def is_numeric(self) -> bool:
        return self is not DType.BOOL

    @staticmethod
    def parse(text: str) -> DType:
        """The dtype spelled `text` (``f32``, ``i8``, ...); a CimcError names the valid ones."""
        try:
            return DType(text)
        except ValueError:
            valid = ", ".join(d.value for d in DType)
            raise CimcError(f"unknown dtype '{text}' (valid: {valid})") from None

    @staticmethod
    def from_numpy(dtype: np.dtype | type) -> DType:
        """The DType of a numpy dtype; other numpy dtypes (float64, uint8...) are refused."""
        name = np.dtype(dtype).name
        for member, numpy_name in _TO_NUMPY.items():
            if numpy_name == name:
                return member
        valid = ", ".join(_TO_NUMPY.values())
        raise CimcError(f"numpy dtype {name} has no IR dtype; convert it to one of {valid}")


_TO_NUMPY: dict[DType, str] = {
    DType.F32: "float32",
    DType.I64: "int64",
    DType.I32: "int32",
    DType.I16: "int16",
    DType.I8: "int8",
    DType.BOOL: "bool",
}


@dataclass(frozen=True)
class TensorType:
    """A static shape and an element type; printed as ``f32[1, 8, 768]`` (``f32[]`` = scalar)."""

    shape: tuple[int, ...]
    dtype: DType

    def __post_init__(self) -> None:
        # Accept lists and numpy ints from importers, store plain ints.
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if any(d < 0 for d in self.shape):
            raise CimcError(f"negative dimension in shape {list(self.shape)}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __str__(self) -> str:
        return self.text

    @cached_property
    def text(self) -> str:
        """``f32[1, 8, 768]``; cached because type-rule messages format types often."""
        return f"{self.dtype.value}[{', '.join(map(str, self.shape))}]"

    @staticmethod
    def of(array: np.ndarray) -> TensorType:
        """The type of a numpy array."""
        return TensorType(tuple(array.shape), DType.from_numpy(array.dtype))
