"""`import_onnx`: an ONNX file to the graph it translates to.

    graph = import_onnx("bert.onnx", seq_len=128)

Steps: load (external data, opset check) -> bind symbolic input dims -> translate node
by node, folding everything computable at compile time. The `idioms` pass then brings
the graph to the normal form (cimc.import_model runs it, and so does the pipeline).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Handlers register themselves on import.
import cimc.importers.onnx_ops_conv  # noqa: F401
import cimc.importers.onnx_ops_math  # noqa: F401
import cimc.importers.onnx_ops_norm  # noqa: F401
import cimc.importers.onnx_ops_tensor  # noqa: F401
from cimc.errors import CimcError
from cimc.importers.onnx_dims import bind_shapes, graph_inputs
from cimc.importers.onnx_load import check_opset, load_model
from cimc.importers.onnx_translate import Ref, Translator, clean_name
from cimc.ir.graph import Graph


def import_onnx(
    path: str | Path,
    shapes: dict[str, tuple[int, ...]] | None = None,
    seq_len: int | None = None,
) -> Graph:
    """The translated graph of the ONNX model at `path` (shape arithmetic folded, idioms
    still decomposed: the `idioms` pass recognizes them).

    Symbolic input dims are bound by `shapes` (per input) or `seq_len` (axis 1 of the
    inputs); a symbolic batch axis 0 defaults to 1.
    """
    model = load_model(path)
    opset = check_opset(model, str(path))
    specs = graph_inputs(model)
    bound = bind_shapes(specs, shapes, seq_len)
    translator = Translator(opset, clean_name(model.graph.name, "main"))
    translator.add_initializers(model, Path(path).parent)
    translator.add_inputs({s.name: s.elem_type for s in specs}, bound)
    translator.run(list(model.graph.node))
    graph = translator.graph
    graph.set_outputs(_outputs(translator, [o.name for o in model.graph.output]))
    graph.dead_code_elimination()
    graph.verify()
    return graph


def _outputs(translator: Translator, names: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for name in names:
        value = translator.lookup(name)
        if isinstance(value, np.ndarray):
            value = translator.ref(value)
        if not isinstance(value, Ref):
            raise CimcError(f"output '{name}' is an IsNaN mask, which cimc cannot compute", name)
        pairs.append((name, value.name))
    return pairs
