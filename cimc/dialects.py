"""The dialects whose ops IR text may hold, loaded by whatever reads any IR text.

An op class registers its IR name when its module is imported; a reader of arbitrary IR
(`cimc opt`, round-trip tests) calls `load_dialects()` first, so that `q.linear` or
`decode.attention` parse although nothing else imported their modules.
"""

from __future__ import annotations


def load_dialects() -> None:
    """Register the ops of every dialect (idempotent: modules are imported once)."""
    import cimc.decode.ops  # noqa: F401  decode.*: KV-cache ops of row-specialized decoders
    import cimc.ir.ops  # noqa: F401  the canonical float ops
    import cimc.quant.dialect  # noqa: F401  q.*: quantized ops holding their integer plans
