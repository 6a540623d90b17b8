"""A .safetensors file mapped read-only: header entries, metadata, and arrays that view the
file instead of copying it.

Why not safetensors' `safe_open`: it reads every tensor into a new array; for a model of a
billion parameters that is another gigabyte beside the page cache. The format is simple (an
8-byte little-endian header length, a JSON header, then the tensors' bytes), so the
interpreter maps the file and views each tensor where it lies.
"""

from __future__ import annotations

import json
import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cimc.errors import CimcError

_DTYPE_OF: dict[str, np.dtype] = {
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
}
_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2, "U32": 4,
             "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}  # fmt: skip


@dataclass(frozen=True)
class StoredTensor:
    """A tensor's header entry: safetensors dtype name ("I8", "F32"...), shape, bytes."""

    dtype: str
    shape: tuple[int, ...]
    start: int  # offsets in the data after the header
    end: int


class MappedConsts:
    """A .safetensors file mapped read-only: its header entries, and arrays viewing it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        size = path.stat().st_size
        if size < 8:
            raise self._error("is shorter than a safetensors header")
        with path.open("rb") as f:
            mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        data = np.frombuffer(mapping, np.uint8)
        n = int.from_bytes(data[:8].tobytes(), "little")
        if 8 + n > size:
            raise self._error(f"has a header of {n} bytes, longer than the file")
        self._body = data[8 + n :]
        header = self._header(data[8 : 8 + n])
        self.metadata = self._metadata(header.pop("__metadata__", None) or {})
        self.entries = {name: self._entry(name, entry) for name, entry in header.items()}

    def array(self, name: str) -> np.ndarray:
        """The tensor as a read-only view of the file (a copy if it is misaligned)."""
        e = self.entries[name]
        dtype = _DTYPE_OF.get(e.dtype)
        if dtype is None:
            raise self._error(f"holds {name!r} as {e.dtype}; constants are i8, i16, i32 or i64")
        data = self._body[e.start : e.end]
        data = data.copy() if e.start % dtype.itemsize else data
        return data.view(dtype).reshape(e.shape)

    def _header(self, raw: np.ndarray) -> dict[str, Any]:
        try:
            header = json.loads(raw.tobytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise self._error(f"has an unreadable header ({e})") from None
        if not isinstance(header, dict):
            raise self._error("has a header that is not a JSON object")
        return header

    def _metadata(self, raw: Any) -> dict[str, str]:
        if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
            raise self._error("has metadata that is not a map of strings")
        return dict(raw)

    def _entry(self, name: str, entry: Any) -> StoredTensor:
        try:
            shape = tuple(int(d) for d in entry["shape"])
            start, end = (int(v) for v in entry["data_offsets"])
            stored = StoredTensor(str(entry["dtype"]), shape, start, end)
        except (KeyError, TypeError, ValueError):
            raise self._error(f"has a malformed entry for {name!r}") from None
        itemsize = _ITEMSIZE.get(stored.dtype)
        count = int(np.prod(shape, dtype=np.int64))
        fits = 0 <= start <= end <= self._body.size and min(shape, default=0) >= 0
        if not fits or (itemsize is not None and end - start != count * itemsize):
            raise self._error(f"holds {name!r} outside its data or with the wrong size")
        return stored

    def _error(self, what: str) -> CimcError:
        return CimcError(f"cannot read constants file {self.path}: it {what}", str(self.path))
