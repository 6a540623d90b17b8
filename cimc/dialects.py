"""The dialects whose ops IR text may hold, imported by whatever reads IR text.

An op class registers its IR name when its module is imported; the canonical ops always
are (cimc.ir), the quantized and decode dialects only once something loads them. A reader
of arbitrary IR (`cimc opt`, round-trip tests) calls `load_dialects()` first.
"""

from __future__ import annotations

import importlib

DIALECT_MODULES = (
    "cimc.ir.ops",  # canonical float ops
    "cimc.quant.dialect",  # q.*: quantized ops holding their integer plans
    "cimc.decode.ops",  # decode.*: KV-cache ops of row-specialized decoder graphs
)


def load_dialects() -> None:
    """Register the ops of every dialect in DIALECT_MODULES (idempotent)."""
    for module in DIALECT_MODULES:
        importlib.import_module(module)
