"""ONNX importer fuzzing: mutated protos are refused with one line, or imported correctly.

The fixed-seed slice runs by default; `benchmarks/fuzz_onnx.py` runs the long sweep.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz_onnx.harness import FuzzBug, base_models, fuzz_one
from tests.fuzz_onnx.mutate import PROTO_MUTATORS

SLICE = range(0, 120)
CLI_SLICE = (0, 10, 22, 35)


def test_fuzz_slice(tmp_path: Path) -> None:
    outcomes = {"refused": 0, "imported": 0}
    bugs = []
    for seed in SLICE:
        try:
            outcomes[fuzz_one(seed, tmp_path).outcome] += 1
        except FuzzBug as e:
            bugs.append(f"seed {seed}: {e}")
    assert not bugs, "\n".join(bugs[:5])
    assert outcomes["refused"] > 30 and outcomes["imported"] > 5, outcomes


@pytest.mark.parametrize("seed", CLI_SLICE)
def test_fuzz_cli(seed: int, tmp_path: Path) -> None:
    """`cimc compile` on a mutated model: exit 2 with one line, or a compiled program."""
    result = fuzz_one(seed, tmp_path, cli=True)
    assert result.outcome in ("refused", "imported")


def test_every_mutator_changes_the_model() -> None:
    import random

    import onnx

    base = base_models()["mlp"]
    for name, fn in sorted(PROTO_MUTATORS.items()):
        changed = False
        for seed in range(10):
            model = onnx.ModelProto()
            model.ParseFromString(base)
            fn(model, random.Random(seed))
            changed |= model.SerializeToString() != base
        assert changed, name
