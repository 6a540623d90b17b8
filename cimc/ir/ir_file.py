"""A graph on disk: FILE.ir (the text form) and FILE.ir.safetensors beside it (the arrays
the text holds by reference, when it holds any).

    write_ir_file(graph, "block.ir")          # block.ir (+ block.ir.safetensors)
    graph = read_ir_file("block.ir")          # reads block.ir.safetensors if it is there

Small graphs stay self-contained text (arrays of at most INLINE_LIMIT elements, and uniform
ones, print inline). The text's `//` comments are skipped, so a `// ----- IR after PASS -----
//` header printed by the pass manager may stay in the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from cimc.errors import CimcError
from cimc.ir.graph import Graph
from cimc.ir.parser import parse_graph
from cimc.ir.printer import print_graph, referenced_constants
from cimc.ir.tensor_file import SUFFIXES, load_tensors, save_tensors, side_file


def read_text(path: str | Path) -> str:
    """The text of an IR file, or a CimcError naming the file and why it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise CimcError(f"cannot read the IR: {reason}", str(path)) from None


def arrays_for(path: str | Path | None, constants: str | Path | None) -> dict[str, np.ndarray]:
    """The arrays of `constants` if given, else of the side file of `path` if it exists."""
    if constants is not None:
        return load_tensors(constants)
    if path is not None and side_file(path).is_file():
        return load_tensors(side_file(path))
    return {}


def read_ir_file(
    path: str | Path, constants: str | Path | None = None, random_seed: int | None = None
) -> Graph:
    """Parse FILE.ir with the arrays of `constants` or of FILE.ir.safetensors (verified)."""
    text = read_text(path)
    return parse_graph(text, arrays_for(path, constants), source=str(path), random_seed=random_seed)


def write_ir_file(graph: Graph, path: str | Path) -> Path | None:
    """Write the text to `path` and the referenced arrays beside it; returns the side file
    written (None when the text is self-contained)."""
    path = Path(path)
    if path.suffix in SUFFIXES:
        raise CimcError(f"IR text cannot go to a {path.suffix} file; name it FILE.ir", str(path))
    try:
        path.write_text(print_graph(graph), encoding="utf-8")
    except OSError as e:
        raise CimcError(f"cannot write the IR: {e.strerror or e}", str(path)) from None
    arrays = referenced_constants(graph)
    if not arrays:
        return None
    save_tensors(arrays, side_file(path))
    return side_file(path)


def unwritten_arrays(graph: Graph, known: Mapping[str, np.ndarray]) -> list[str]:
    """Names of the arrays the text of `graph` references whose data `known` lacks (or holds
    with other contents): what a reader of the printed text could not load."""
    return [
        name
        for name, value in referenced_constants(graph).items()
        if name not in known or not _same(known[name], value)
    ]


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
