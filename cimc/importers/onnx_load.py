"""Load and validate an ONNX file: external data, opset range, local functions.

External data is checked here and left in its file: the translator maps initializers from
it (cimc/importers/onnx_external.py) instead of reading them into the protobuf.

Every failure a user can cause (a missing or corrupt file, weights whose external data
file is gone, an opset cimc does not know) is a one-line CimcError naming the file.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import onnx.inliner

from cimc.errors import CimcError
from cimc.importers.onnx_external import check_external, read_into_protobuf

MIN_OPSET = 13
MAX_OPSET = 25
_DEFAULT_DOMAINS = ("", "ai.onnx")


def load_model(path: str | Path) -> onnx.ModelProto:
    """The model at `path`, its external data checked, local functions inlined."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise CimcError("no such ONNX file; check the path", where)
    model = _parse(path)
    _external_data(model, path.parent, where)
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


def _external_data(model: onnx.ModelProto, base_dir: Path, where: str) -> None:
    """Check every tensor stored outside the protobuf against its data file (paths from
    the model's folder). Initializers stay there: the translator maps them
    (cimc/importers/onnx_external.py); the rare tensor-valued attribute is read in."""
    from onnx.external_data_helper import uses_external_data

    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            check_external(tensor, base_dir, where)
    for tensor in _attribute_tensors(model):
        if uses_external_data(tensor):
            check_external(tensor, base_dir, where)
            read_into_protobuf(tensor, base_dir, where)


def _attribute_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    nodes = [*model.graph.node, *(n for f in model.functions for n in f.node)]
    tensors = []
    for node in nodes:
        for attr in node.attribute:
            tensors += [attr.t] if attr.HasField("t") else []
            tensors += list(attr.tensors)
    return tensors


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
