"""Load and validate an ONNX file: external data, opset range, local functions.

Every failure a user can cause (a missing or corrupt file, weights whose external data
file is gone, an opset cimc does not know) is a one-line CimcError naming the file.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import onnx.inliner

from cimc.errors import CimcError

MIN_OPSET = 13
MAX_OPSET = 25
_DEFAULT_DOMAINS = ("", "ai.onnx")


def load_model(path: str | Path) -> onnx.ModelProto:
    """The model at `path` with its external data loaded and local functions inlined."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise CimcError("no such ONNX file; check the path", where)
    model = _parse(path)
    _load_external_data(model, path.parent, where)
    check_opset(model, where)
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    if not model.graph.output:
        raise CimcError("the ONNX graph has no outputs", where)
    check_names(model.graph, where)
    return model


def _printable(text: object) -> bool:
    return isinstance(text, str) and text.isprintable()


def check_names(graph: onnx.GraphProto, where: str) -> None:
    """Names end up in one-line messages and IR text: refuse control characters (a
    corrupt file) before anything prints them."""
    values = [*graph.input, *graph.output, *graph.initializer]
    names = [v.name for v in values]
    for node in graph.node:
        names += [node.name, node.op_type, node.domain, *node.input, *node.output]
    for name in names:
        if not _printable(name):
            raise CimcError(
                f"the graph has a name with control or non-UTF-8 characters ({name!r}); "
                "the file is corrupt, re-export it",
                where,
            )


def _parse(path: Path) -> onnx.ModelProto:
    where = str(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and others for garbage
        msg = f"not a valid ONNX protobuf ({type(e).__name__}); re-export it"
        raise CimcError(msg, where) from None
    if not model.graph.node and not model.graph.output:
        # protobuf happily parses many short byte strings as an empty message
        raise CimcError("the file holds no ONNX graph (empty or corrupt); re-export it", where)
    return model


def _load_external_data(model: onnx.ModelProto, base_dir: Path, where: str) -> None:
    """Read initializers stored outside the protobuf, resolving paths from the model dir."""
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    external = [t for t in model.graph.initializer if uses_external_data(t)]
    for tensor in external:
        location = _external_location(tensor)
        if not (base_dir / location).is_file():
            raise CimcError(
                f"initializer '{tensor.name}' needs external data file '{location}', which is "
                f"not in {base_dir}; copy it next to the model",
                where,
            )
    if not external:
        return
    try:
        load_external_data_for_model(model, str(base_dir))
    except Exception as e:
        raise CimcError(f"cannot read external data: {e}", where) from None
    for tensor in external:
        _check_size(tensor, where)


def _external_location(tensor: onnx.TensorProto) -> str:
    for entry in tensor.external_data:
        if entry.key == "location":
            return entry.value
    return ""


def _check_size(tensor: onnx.TensorProto, where: str) -> None:
    """A truncated external data file yields short raw_data: say so instead of reshaping."""
    import numpy as np

    itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    expected = int(np.prod(tensor.dims, dtype=np.int64)) * itemsize
    if tensor.raw_data and len(tensor.raw_data) != expected:
        raise CimcError(
            f"initializer '{tensor.name}' has {len(tensor.raw_data)} bytes of external data, "
            f"expected {expected}; the .data file is truncated or stale",
            where,
        )


def check_opset(model: onnx.ModelProto, where: str) -> int:
    """The default-domain opset; a CimcError unless it is in [MIN_OPSET, MAX_OPSET]."""
    versions = [o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS]
    if not versions:
        raise CimcError("the model imports no default-domain (ai.onnx) opset", where)
    version = versions[0]
    if not MIN_OPSET <= version <= MAX_OPSET:
        raise CimcError(
            f"opset {version} is not supported (cimc reads opsets {MIN_OPSET} to {MAX_OPSET}); "
            "re-export with opset_version in that range",
            where,
        )
    return version
