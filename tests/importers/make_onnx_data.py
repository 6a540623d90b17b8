"""Rebuild the checked-in dynamo exports used by the default test run.

python tests/importers/make_onnx_data.py
"""

from __future__ import annotations

from pathlib import Path

from cimc.zoo import build_model, example_inputs, export_onnx

DATA = Path(__file__).parent / "data"
FAMILIES = ("bert", "llama")


def main() -> None:
    for family in FAMILIES:
        model = build_model(family)
        path = DATA / f"{family}_dynamo.onnx"
        export_onnx(model, example_inputs(model, seq_len=7), path, exporter="dynamo")
        print(path, path.stat().st_size)


if __name__ == "__main__":
    main()
