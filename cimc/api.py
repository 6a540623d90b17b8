"""The top-level Python API: one call imports any supported model into a canonical graph.

import cimc
graph = cimc.import_model("bert.onnx", seq_len=128)
graph = cimc.import_model("llama.pt2", seq_len=32)
graph = cimc.import_model(module, example_inputs=(input_ids, attention_mask))
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cimc.errors import CimcError
from cimc.ir import Graph

ONNX_SUFFIXES = (".onnx",)
TORCH_SUFFIXES = (".pt2",)


def import_model(
    path_or_module: Any,
    example_inputs: Any = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    seq_len: int | None = None,
    canonicalize: bool = True,
) -> Graph:
    """The canonical graph of a model.

    `path_or_module` is a ``.onnx`` file, a ``.pt2`` file (torch.export.save), a
    torch.export.ExportedProgram, an nn.Module or an fx.GraphModule. Modules are exported
    with torch.export.export(module, example_inputs) (a tensor, a tuple of tensors or a
    dict of keyword tensors). Symbolic dims are bound by `shapes` ({input name: shape})
    or `seq_len`; a symbolic batch defaults to 1. The `idioms` pass brings the translated
    graph to the normal form; ``canonicalize=False`` returns the translation as it is.
    """
    graph = translate(path_or_module, example_inputs, shapes, seq_len)
    if not canonicalize:
        return graph
    from cimc.passes.idioms import Idioms
    from cimc.passes.manager import PassManager

    return PassManager([Idioms()]).run(graph)


def translate(
    path_or_module: Any,
    example_inputs: Any,
    shapes: Mapping[str, Sequence[int]] | None,
    seq_len: int | None,
) -> Graph:
    """The importer's translation of a model file or torch program."""
    if isinstance(path_or_module, str | os.PathLike):
        return import_file(Path(path_or_module), example_inputs, shapes, seq_len)
    from cimc.importers.torch_export import import_torch

    if not is_torch_program(path_or_module):
        raise CimcError(
            f"cannot import a {type(path_or_module).__name__}; pass a path (.onnx, .pt2), "
            "an ExportedProgram, an nn.Module or an fx.GraphModule",
            "import_model",
        )
    return import_torch(path_or_module, example_inputs, shapes, seq_len)


def import_file(
    path: Path, example_inputs: Any, shapes: Mapping[str, Sequence[int]] | None, seq_len: int | None
) -> Graph:
    suffix = path.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        from cimc.importers import import_onnx

        merged = {**onnx_example_shapes(example_inputs, path), **dict(shapes or {})}
        bound = {name: tuple(int(d) for d in shape) for name, shape in merged.items()}
        return import_onnx(path, shapes=bound or None, seq_len=seq_len)
    if suffix in TORCH_SUFFIXES:
        from cimc.importers.torch_export import import_torch

        return import_torch(path, example_inputs, shapes, seq_len)
    known = ", ".join((*ONNX_SUFFIXES, *TORCH_SUFFIXES))
    raise CimcError(
        f"unknown model file type '{path.suffix or '(none)'}'; cimc imports {known} files",
        str(path),
    )


def onnx_example_shapes(example_inputs: Any, path: Path) -> dict[str, tuple[int, ...]]:
    """Example tensors name ONNX input shapes only by name (a dict)."""
    if example_inputs is None:
        return {}
    if isinstance(example_inputs, Mapping):
        return {name: tuple(t.shape) for name, t in example_inputs.items()}
    raise CimcError(
        "for an ONNX file pass example_inputs as a dict {input name: tensor}, or use "
        "shapes= / seq_len=",
        str(path),
    )


def is_torch_program(value: Any) -> bool:
    import torch

    return isinstance(value, torch.nn.Module | torch.export.ExportedProgram)
