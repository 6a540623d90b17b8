"""The torch.export / torch.fx importer: program -> the graph it translates to.

graph = import_torch("model.pt2", seq_len=16)
graph = import_torch(module, example_inputs=(ids, mask))
"""

from __future__ import annotations

import os

import torch
from torch.export import ExportedProgram

# The attention and shape handlers register themselves in torch_ops.TABLE on import.
import cimc.importers.torch_attention  # noqa: F401
import cimc.importers.torch_ops_conv  # noqa: F401
import cimc.importers.torch_shape_ops  # noqa: F401
from cimc.importers import torch_ops
from cimc.importers.torch_builder import Builder
from cimc.importers.torch_load import ExampleInputs, Shapes, load_program
from cimc.importers.torch_translate import Translator
from cimc.ir import Graph


def import_torch(
    source: str | os.PathLike[str] | ExportedProgram | torch.nn.Module,
    example_inputs: ExampleInputs | None = None,
    shapes: Shapes | None = None,
    seq_len: int | None = None,
    name: str | None = None,
) -> Graph:
    """Translate a .pt2 file, ExportedProgram, nn.Module or fx.GraphModule, one aten op at
    a time (idioms stay decomposed: the `idioms` pass recognizes them, as for ONNX).

    Modules are exported with torch.export.export(module, example_inputs). Dynamic dims
    are bound by `shapes` ({input name: shape}), the example inputs, or `seq_len`
    (the batch defaults to 1). Raises CimcError for bad files and unsupported ops.
    """
    loaded = load_program(source, example_inputs, shapes, seq_len)
    graph = Graph(name or graph_name(source))
    translator = Translator(loaded, Builder(graph), torch_ops.TABLE)
    graph = translator.run()
    graph.verify()
    return graph


def graph_name(source: object) -> str:
    if isinstance(source, str | os.PathLike):
        return os.path.splitext(os.path.basename(os.fspath(source)))[0] or "main"
    if isinstance(source, torch.nn.Module) and not isinstance(source, torch.fx.GraphModule):
        return type(source).__name__
    return "main"
