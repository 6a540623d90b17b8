"""Random-weight Hugging Face models for tests, examples and the CLI (`cimc example`).

from cimc.zoo import build_model, example_inputs, export_onnx
model = build_model("llama", preset="odd", head="lm", num_hidden_layers=1)
path = export_onnx(model, example_inputs(model), "out/llama.onnx", exporter="dynamo")
"""

from __future__ import annotations

from cimc.zoo.examples import EXAMPLES, write_example
from cimc.zoo.export import (
    EXPORTERS,
    INPUT_NAMES,
    ONNX_EXPORTERS,
    OUTPUT_NAME,
    export_onnx,
    export_torch,
    save_with_external_data,
)
from cimc.zoo.models import (
    FAMILIES,
    HEADS,
    HiddenStates,
    build_model,
    example_inputs,
    make_config,
    weight_bytes,
)

__all__ = [
    "EXAMPLES",
    "EXPORTERS",
    "FAMILIES",
    "HEADS",
    "INPUT_NAMES",
    "ONNX_EXPORTERS",
    "OUTPUT_NAME",
    "HiddenStates",
    "build_model",
    "example_inputs",
    "export_onnx",
    "export_torch",
    "make_config",
    "save_with_external_data",
    "weight_bytes",
    "write_example",
]
