"""Write a .safetensors file byte-deterministically, metadata included.

The safetensors library keeps metadata in a hash map whose order changes from one process
to the next, so two compiles of one model would write different bytes (and different
hashes on the program's `.consts` line). This writer emits the format itself
(https://huggingface.co/docs/safetensors: an 8-byte little-endian header length, a JSON
header of `{name: {dtype, shape, data_offsets}}` plus `__metadata__`, padded with blanks to
8 bytes, then the tensors' bytes back to back) with every key sorted.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

SAFETENSORS_DTYPES = {  # numpy dtype name -> safetensors dtype name
    "bool": "BOOL",
    "int8": "I8",
    "uint8": "U8",
    "int16": "I16",
    "uint16": "U16",
    "int32": "I32",
    "uint32": "U32",
    "int64": "I64",
    "uint64": "U64",
    "float16": "F16",
    "float32": "F32",
    "float64": "F64",
}


def save_tensors(
    tensors: Mapping[str, np.ndarray], path: Path, metadata: Mapping[str, str]
) -> None:
    """Write `tensors` (little-endian, C order) and `metadata` to `path`. The data runs
    widest element first, then by name, as the library lays it out: every tensor stays
    aligned to its element size for readers that map the file."""
    arrays = {name: _little_endian(tensors[name]) for name in tensors}
    arrays = dict(sorted(arrays.items(), key=lambda kv: (-kv[1].itemsize, kv[0])))
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {k: str(metadata[k]) for k in sorted(metadata)}
    offset = 0
    for name, array in arrays.items():
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[array.dtype.name],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for array in arrays.values():
            f.write(array.reshape(-1).view(np.uint8).data)  # no copy of the bytes


def _little_endian(array: np.ndarray) -> np.ndarray:
    if array.dtype.name not in SAFETENSORS_DTYPES:
        raise ValueError(f"safetensors cannot hold dtype {array.dtype}")
    return np.require(array, array.dtype.newbyteorder("<"), "C")  # keeps 0-d arrays 0-d
