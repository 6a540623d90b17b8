"""The golden-output how-to (examples/test_my_model_golden.py) on its checked-in model."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"cimc_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


golden = load_example("test_my_model_golden")


@pytest.fixture(scope="module")
def compiled() -> object:
    return golden.compile_it()


def test_checked_in_files_are_small_and_plain() -> None:
    assert golden.MODEL.stat().st_size < 200_000
    for path in (golden.GOLDEN, golden.INPUTS, golden.CALIBRATION):
        assert golden.load_npz(path)  # allow_pickle=False: plain arrays only


def test_program_outputs_equal_the_checked_in_golden(compiled: object) -> None:
    golden.test_outputs_equal_the_golden_file(compiled)


def test_program_is_bit_exact_against_the_integer_golden(compiled: object) -> None:
    golden.test_program_is_bit_exact_and_accurate(compiled)


def test_one_changed_output_code_fails(compiled: object) -> None:
    want = golden.load_npz(golden.GOLDEN)
    got = golden.run_on_machine(compiled, golden.load_npz(golden.INPUTS))
    name = sorted(want)[0]
    got[name] = got[name].copy()
    got[name].flat[5] += 1
    with pytest.raises(AssertionError, match=r"1 of \d+ elements differ.*--update"):
        golden.assert_same_outputs(got, want)


def test_the_script_rebuilds_the_checked_in_model(tmp_path: Path) -> None:
    make = load_example("make_tiny_model")
    path = make.write(tmp_path)
    assert path.read_bytes() == golden.MODEL.read_bytes()
    for name in ("tiny_encoder.calib.npz", "tiny_encoder.inputs.npz"):
        fresh, kept = np.load(tmp_path / name), np.load(golden.MODELS / name)
        assert all(np.array_equal(fresh[k], kept[k]) for k in kept.files)
