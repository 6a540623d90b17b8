"""Random-weight Hugging Face models for tests, examples and the CLI (`cimc example`).

from cimc.zoo import build_model, example_inputs, export_onnx
model = build_model("llama", preset="odd", head="lm", num_hidden_layers=1)
path = export_onnx(model, example_inputs(model), "out/llama.onnx", exporter="dynamo")

Names resolve lazily: `cimc.zoo.catalog` (the example list the CLI shows) must not pay for
importing torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "EXAMPLES": "catalog",
    "CNN_SIZES": "cnn",
    "ENCODERS": "encoders",
    "build_encoder": "encoders",
    "encoder_input": "encoders",
    "build_cnn": "cnn",
    "cnn_input": "cnn",
    "ONNX_EXPORTERS": "catalog",
    "write_example": "examples",
    "EXPORTERS": "export",
    "INPUT_NAMES": "export",
    "OUTPUT_NAME": "export",
    "export_onnx": "export",
    "export_torch": "export",
    "save_with_external_data": "export",
    "FAMILIES": "models",
    "HEADS": "models",
    "HiddenStates": "models",
    "build_model": "models",
    "example_inputs": "models",
    "make_config": "models",
    "weight_bytes": "models",
    "Tokens": "pretrained",
    "load_minilm": "pretrained",
    "sentences": "pretrained",
    "token_windows": "pretrained",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'cimc.zoo' has no attribute {name!r}")
    return getattr(importlib.import_module(f"cimc.zoo.{_WHERE[name]}"), name)
