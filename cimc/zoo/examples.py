"""Named example models for `cimc example NAME -o DIR` (family + preset + head)."""

from __future__ import annotations

from pathlib import Path

from cimc.errors import CimcError
from cimc.zoo.catalog import EXAMPLES
from cimc.zoo.export import export_onnx
from cimc.zoo.models import build_model, example_inputs


def write_example(
    name: str, out_dir: str | Path, seq_len: int = 8, exporter: str | None = None
) -> Path:
    """Export example `name` to ``DIR/NAME.onnx`` (symbolic batch/seq axes); returns the path."""
    if name not in EXAMPLES:
        known = ", ".join(sorted(EXAMPLES))
        raise CimcError(f"unknown example {name!r}; known examples: {known}", "example")
    ex = EXAMPLES[name]
    model = build_model(ex.family, ex.preset, head=ex.head)
    if ex.zeros:
        from cimc.zoo.relu_lm import shift_ffn_biases

        shift_ffn_biases(model, ex.zeros)
    inputs = example_inputs(model, seq_len=seq_len)
    path = Path(out_dir) / f"{name}.onnx"
    return export_onnx(model, inputs, path, exporter=exporter or ex.exporter)
