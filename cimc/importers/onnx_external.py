"""ONNX external data, memory-mapped: initializers become read-only views of the file.

Why: a model's weights are its bulk (4 bytes per parameter in float32). Reading them into
the protobuf and then into numpy holds them twice; a view of a memory-mapped file holds
them not at all: the pages are read when a pass touches them and stay in the page cache,
which the kernel reclaims as it needs. Each data file is mapped once per process (a
second import of the same model, as `cimc generate`'s probe, shares the mapping).

A tensor whose type numpy cannot view directly (bfloat16, float8, 4-bit) or whose offset
is not aligned to its element size is read into the protobuf as ONNX reads it.
"""

from __future__ import annotations

import mmap
import weakref
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.external_data_helper import load_external_data_for_tensor

from cimc.errors import CimcError

# dtypes whose ONNX raw bytes are numpy's little-endian bytes of the same dtype
_VIEWABLE: dict[int, np.dtype] = {
    onnx.TensorProto.FLOAT: np.dtype("<f4"),
    onnx.TensorProto.DOUBLE: np.dtype("<f8"),
    onnx.TensorProto.FLOAT16: np.dtype("<f2"),
    onnx.TensorProto.INT8: np.dtype("i1"),
    onnx.TensorProto.UINT8: np.dtype("u1"),
    onnx.TensorProto.INT16: np.dtype("<i2"),
    onnx.TensorProto.UINT16: np.dtype("<u2"),
    onnx.TensorProto.INT32: np.dtype("<i4"),
    onnx.TensorProto.UINT32: np.dtype("<u4"),
    onnx.TensorProto.INT64: np.dtype("<i8"),
    onnx.TensorProto.UINT64: np.dtype("<u8"),
    onnx.TensorProto.BOOL: np.dtype("?"),
}

# (path, size, mtime) -> the whole file as a read-only uint8 array on its mapping
_MAPPED: weakref.WeakValueDictionary[tuple[str, int, int], np.ndarray] = (
    weakref.WeakValueDictionary()
)


def external_info(tensor: onnx.TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


def check_external(tensor: onnx.TensorProto, base_dir: Path, where: str) -> None:
    """The data file exists and holds the tensor's bytes (before anything is read)."""
    info = external_info(tensor)
    location = info.get("location", "")
    path = base_dir / location
    if not location or not path.is_file():
        raise CimcError(
            f"initializer '{tensor.name}' needs external data file '{location}', which is "
            f"not in {base_dir}; copy it next to the model",
            where,
        )
    _, length = _span(tensor, info, path.stat().st_size, where)
    expected = _expected_bytes(tensor)
    if expected is not None and length != expected:
        raise CimcError(
            f"initializer '{tensor.name}' has {length} bytes of external data, expected "
            f"{expected}; the .data file is truncated or stale",
            where,
        )


def _span(tensor: onnx.TensorProto, info: dict[str, str], size: int, where: str) -> tuple[int, int]:
    """(offset, length) of the tensor's bytes in a file of `size` bytes."""
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else size - offset
    except ValueError:
        raise CimcError(
            f"initializer '{tensor.name}' has a malformed external data offset or length",
            where,
        ) from None
    if offset < 0 or length < 0 or offset + length > size:
        raise CimcError(
            f"initializer '{tensor.name}' has {max(0, min(length, size - offset))} bytes of "
            f"external data, expected {length}; the .data file is truncated or stale",
            where,
        )
    return offset, length


def _expected_bytes(tensor: onnx.TensorProto) -> int | None:
    dtype = _VIEWABLE.get(tensor.data_type)
    if dtype is None:
        return None
    count = 1
    for d in tensor.dims:
        count *= int(d)
    return count * dtype.itemsize


def external_array(tensor: onnx.TensorProto, base_dir: Path, where: str) -> np.ndarray:
    """The initializer as a read-only view of its mapped data file (see the module doc);
    `check_external` has validated it."""
    info = external_info(tensor)
    path = base_dir / info["location"]
    dtype = _VIEWABLE.get(tensor.data_type)
    offset, length = _span(tensor, info, path.stat().st_size, where)
    if dtype is None or offset % dtype.itemsize:
        read_into_protobuf(tensor, base_dir, where)
        return numpy_helper.to_array(tensor)
    data = mapped_file(path)[offset : offset + length]
    return data.view(dtype).reshape(tuple(int(d) for d in tensor.dims))


def mapped_file(path: Path) -> np.ndarray:
    """The whole file as a read-only uint8 array on one shared mapping per process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    array = _MAPPED.get(key)
    if array is None:
        if stat.st_size == 0:
            return np.zeros(0, np.uint8)
        with path.open("rb") as f:
            mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        array = np.frombuffer(mapping, np.uint8)
        _MAPPED[key] = array
    return array


def read_into_protobuf(tensor: onnx.TensorProto, base_dir: Path, where: str) -> None:
    """Read the tensor's external bytes into its raw_data, as ONNX loads them."""
    try:
        load_external_data_for_tensor(tensor, str(base_dir))
    except (OSError, ValueError, TypeError) as e:
        raise CimcError(f"cannot read external data: {e}", where) from None
    tensor.data_location = onnx.TensorProto.DEFAULT
    del tensor.external_data[:]
