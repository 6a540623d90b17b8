"""Regenerate the constants (.safetensors) and sample inputs (.inputs.npz) of the examples.

Run from anywhere: `python isa/examples/make_data.py`. Fixed seeds: the output is identical
every time. Tables and multipliers are computed here, once, in float; the programs and
their tests only ever see the stored integers.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

HERE = Path(__file__).resolve().parent


def _save(name: str, consts: dict[str, np.ndarray], inputs: dict[str, np.ndarray]) -> None:
    save_file(consts, str(HERE / f"{name}.safetensors"))
    np.savez(HERE / f"{name}.inputs.npz", **inputs)


def main() -> None:
    rng = np.random.default_rng(2024)
    _save(
        "matmul_2core",
        {
            "w": rng.integers(-127, 128, (64, 64), dtype=np.int8),
            "b": rng.integers(-5000, 5000, (1, 64)).astype(np.int32),
            "mult": rng.integers(1 << 30, 1 << 31, (1, 64)).astype(np.int32),
        },
        {"x": rng.integers(-128, 128, (8, 64), dtype=np.int8)},
    )
    d = np.arange(-128, 128)
    table = np.where(d <= 0, np.round(np.exp(np.minimum(d, 0) / 16.0) * 2**15), 0)
    _save(
        "softmax_rows",
        {"exp_table": table.astype(np.int32).reshape(1, 256)},
        {"x": rng.integers(-128, 128, (8, 32), dtype=np.int8)},
    )
    x = rng.integers(-60, 60, (8, 64), dtype=np.int8)
    x[3] = 17  # a constant row: zero variance
    _save(
        "layernorm",
        {
            "gamma": rng.integers(32, 96, (1, 64)).astype(np.int32),
            "beta": rng.integers(-20, 20, (1, 64)).astype(np.int32),
        },
        {"x": x},
    )
    _save(
        "double_buffer",
        {"w": rng.integers(-127, 128, (128, 32), dtype=np.int8)},
        {"x": rng.integers(-128, 128, (32, 128), dtype=np.int8)},
    )
    assert math.isclose(table[128], 2**15)


if __name__ == "__main__":
    main()
