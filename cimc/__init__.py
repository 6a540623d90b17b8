"""cimc: a compiler from transformer models to a digital SRAM compute-in-memory accelerator."""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Lazy: `import cimc` must not pay for importing torch and onnx.
    if name == "import_model":
        from cimc.api import import_model

        return import_model
    raise AttributeError(f"module 'cimc' has no attribute {name!r}")
