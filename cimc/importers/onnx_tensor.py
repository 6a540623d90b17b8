"""ONNX tensors to numpy, checked first: a corrupt or absurd tensor is a located CimcError.

Initializers and tensor-valued attributes (Constant values) both go through
`tensor_array`; `element_count` is the one size limit for constants and inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from cimc.errors import CimcError
from cimc.importers.onnx_external import external_array

# what onnx.numpy_helper raises on tensor bytes it cannot decode (the file is corrupt)
_DECODE_ERRORS = (ValueError, TypeError, IndexError, KeyError, AttributeError)
MAX_CONST_ELEMENTS = 1 << 28  # 1 GiB of float32: larger constants are refused, not allocated


def first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [""])[0][:200]


def element_count(dims: Sequence[int], what: str, where: str) -> int:
    """The element count of `dims`, refused when negative or over MAX_CONST_ELEMENTS."""
    count = 1
    for d in dims:
        if int(d) < 0:
            raise CimcError(f"{what} has a negative dimension in {list(dims)}", where)
        count *= int(d)
    if count > MAX_CONST_ELEMENTS:
        raise CimcError(
            f"{what} of shape {list(dims)} has {count:,} elements, more than cimc's limit of "
            f"{MAX_CONST_ELEMENTS:,}; check the model's shapes",
            where,
        )
    return count


def tensor_array(
    tensor: onnx.TensorProto, where: str | None = None, base_dir: Path | None = None
) -> np.ndarray:
    """A tensor (initializer, attribute) as numpy, its dims, type and size checked first;
    external data (in files beside the model, in `base_dir`) as a read-only mapped view."""
    where = where or f"initializer '{tensor.name}'"
    count = element_count(tensor.dims, where, where)
    if tensor.data_type not in onnx.TensorProto.DataType.values() or tensor.data_type == 0:
        raise CimcError(f"unknown tensor data type {tensor.data_type}", where)
    if tensor.data_location == onnx.TensorProto.EXTERNAL and not tensor.raw_data:
        if base_dir is None:
            raise CimcError("external data was not loaded", where)
        return external_array(tensor, base_dir, where)
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, ValueError, TypeError):
        itemsize = 0
    if tensor.raw_data and itemsize and len(tensor.raw_data) != count * itemsize:
        raise CimcError(
            f"holds {len(tensor.raw_data)} bytes but its shape {list(tensor.dims)} needs "
            f"{count * itemsize}; the model is corrupt, re-export it",
            where,
        )
    try:
        return numpy_helper.to_array(tensor)
    except _DECODE_ERRORS as e:
        raise CimcError(f"cannot read the tensor: {first_line(e)}", where) from None
