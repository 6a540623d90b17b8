"""A program's constants file (.safetensors), written and read without copying the data.

Why not safetensors' own numpy functions: `save_file` first turns every array into a
`bytes` copy, and `safe_open` reads every tensor into a new array; for a model of a
billion parameters each is another gigabyte. The format is simple (isa/SPEC.md names it):
an 8-byte little-endian header length, a JSON header padded with spaces to 8 bytes, then
the tensors' bytes. `write_consts` writes the same bytes as `safetensors.numpy.save_file`
(tensors ordered by dtype, widest first, then by name), one array at a time;
`MappedConsts` reads the header and gives read-only views of the memory-mapped file.
"""

from __future__ import annotations

import json
import mmap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cimc.errors import CimcError

# safetensors' dtype names, widest first (its order of tensors in a file)
_DTYPES: tuple[tuple[str, np.dtype], ...] = (
    ("I64", np.dtype("<i8")),
    ("I32", np.dtype("<i4")),
    ("I16", np.dtype("<i2")),
    ("I8", np.dtype("i1")),
)
_NAME_OF = {dt: name for name, dt in _DTYPES}
_DTYPE_OF = dict(_DTYPES)
_RANK = {name: k for k, (name, _) in enumerate(_DTYPES)}
_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2, "U32": 4,
             "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}  # fmt: skip


def write_consts(arrays: Mapping[str, np.ndarray], path: Path) -> None:
    """Write `arrays` (integer arrays of the machine's dtypes) as a .safetensors file."""
    order = sorted(arrays, key=lambda n: (_RANK[_dtype_name(n, arrays[n])], n))
    header: dict[str, Any] = {}
    at = 0
    for name in order:
        a = arrays[name]
        header[name] = {
            "dtype": _dtype_name(name, a),
            "shape": list(a.shape),
            "data_offsets": [at, at + a.nbytes],
        }
        at += a.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    with path.open("wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for name in order:
            data = np.ascontiguousarray(arrays[name])  # no copy for the compiler's arrays
            f.write(data.reshape(-1).view(np.uint8).data)


def _dtype_name(name: str, a: np.ndarray) -> str:
    dtype = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
    found = _NAME_OF.get(np.dtype(dtype))
    if found is None or a.dtype.byteorder == ">":
        raise CimcError(f"constant {name!r} is {a.dtype}; constants are i8, i16, i32 or i64")
    return found


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
        self.entries = {
            name: self._entry(name, entry)
            for name, entry in self._header(data[8 : 8 + n]).items()
            if name != "__metadata__"
        }

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
        return CimcError(f"constants file {self.path} {what}", str(self.path))
