"""The torch.export / torch.fx importer: program -> canonical graph.

graph = import_torch("model.pt2", seq_len=16)
graph = import_torch(module, example_inputs=(ids, mask))
"""

from __future__ import annotations

import os

import torch
from torch.export import ExportedProgram

# The attention and shape handlers register themselves in torch_ops.TABLE on import.
import cimc.importers.torch_attention  # noqa: F401
import cimc.importers.torch_shape_ops  # noqa: F401
from cimc.importers import torch_idioms, torch_ops, torch_simplify
from cimc.importers.torch_builder import Builder, Rule
from cimc.importers.torch_load import ExampleInputs, Shapes, load_program
from cimc.importers.torch_translate import Translator
from cimc.ir import Graph
from cimc.passes.idioms_pipeline import idiom_pipeline
from cimc.passes.manager import PassManager


def rules() -> dict[str, list[Rule]]:
    """Simplifications first (they make idioms visible), then idiom recognizers."""
    merged: dict[str, list[Rule]] = {}
    for table in (torch_simplify.RULES, torch_idioms.RULES):
        for name, found in table.items():
            merged.setdefault(name, []).extend(found)
    return merged


def import_torch(
    source: str | os.PathLike[str] | ExportedProgram | torch.nn.Module,
    example_inputs: ExampleInputs | None = None,
    shapes: Shapes | None = None,
    seq_len: int | None = None,
    name: str | None = None,
    canonicalize: bool = True,
) -> Graph:
    """Import a .pt2 file, ExportedProgram, nn.Module or fx.GraphModule.

    Modules are exported with torch.export.export(module, example_inputs). Dynamic dims
    are bound by `shapes` ({input name: shape}), the example inputs, or `seq_len`
    (the batch defaults to 1). The shared idiom pipeline then runs as for ONNX imports
    (``canonicalize=False`` skips it). Raises CimcError for bad files and unsupported ops.
    """
    loaded = load_program(source, example_inputs, shapes, seq_len)
    graph = Graph(name or graph_name(source))
    translator = Translator(loaded, Builder(graph, rules()), torch_ops.TABLE)
    graph = translator.run()
    if not canonicalize:
        graph.verify()
        return graph
    return PassManager(idiom_pipeline()).run(graph)


def graph_name(source: object) -> str:
    if isinstance(source, str | os.PathLike):
        return os.path.splitext(os.path.basename(os.fspath(source)))[0] or "main"
    if isinstance(source, torch.nn.Module) and not isinstance(source, torch.fx.GraphModule):
        return type(source).__name__
    return "main"
