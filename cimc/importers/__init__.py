"""Front ends: ONNX (import_onnx) and torch.export / fx (torch_* modules)."""

from __future__ import annotations

from cimc.importers.onnx_import import import_onnx

__all__ = ["import_onnx"]
