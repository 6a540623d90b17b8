"""cimc: a compiler from transformer models to a digital SRAM compute-in-memory accelerator.

import cimc
model = cimc.compile(module, example_inputs=(ids, mask), arch="tiny")
model.run(ids, mask)            # dequantized outputs of the bit-exact interpreter
model.save("gpt2.cimasm")       # + gpt2.safetensors; cimc.load("gpt2.cimasm")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cimc.errors import CimcError
from cimc.version import __version__

if TYPE_CHECKING:
    from cimc.api import import_model
    from cimc.model import CompiledModel, compile, load

__all__ = ["CimcError", "CompiledModel", "__version__", "compile", "import_model", "load"]

# Lazy: `import cimc` must not pay for importing torch and onnx.
_LAZY = {
    "import_model": "cimc.api",
    "compile": "cimc.model",
    "load": "cimc.model",
    "CompiledModel": "cimc.model",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cimc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
