"""Golden-output test for your own model: copy this file next to your tests and edit MODEL.

    pytest examples/test_my_model_golden.py                # check
    python examples/test_my_model_golden.py --update       # (re)write the golden file

Three checks, from the strongest to the loosest:
1. the compiled program's outputs equal the checked-in golden outputs, element for
   element: any change in the compiler that changes one output code fails here;
2. the program equals cimc's integer golden (PyTorch, untiled) bit for bit on the same
   inputs (`cimc verify`): a wrong program is told apart from a different quantization;
3. the dequantized outputs stay close to the float model (accuracy of the quantization).

The model is compiled once per test session with a fixed calibration file, so the scales,
and with them the golden outputs, do not depend on generated calibration data.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from cimc.backend.builder.compiled import graph_outputs, program_inputs
from cimc.machine.arch import load_arch
from cimc.machine.interpreter import run_program
from cimc.pipeline import PipelineOptions, PipelineResult, compile_model
from cimc.verify import verify_compiled

# ---- edit these for your model ----------------------------------------------------------
MODELS = Path(__file__).resolve().parent / "models"
MODEL = MODELS / "tiny_encoder.onnx"  # .onnx or .pt2
CALIBRATION = MODELS / "tiny_encoder.calib.npz"  # samples of real inputs: [N, *input shape]
INPUTS = MODELS / "tiny_encoder.inputs.npz"  # one array per model input
GOLDEN = MODELS / "tiny_encoder.golden.npz"  # written by --update
ARCH = "tiny"  # a preset name or your own FILE.toml
MIN_COSINE = 0.99  # dequantized outputs vs the float model
# ------------------------------------------------------------------------------------------


def compile_it() -> PipelineResult:
    options = PipelineOptions(calibration=str(CALIBRATION))
    return compile_model(str(MODEL), load_arch(ARCH), options)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:  # plain arrays only, never pickles
        return {name: data[name] for name in data.files}


def run_on_machine(result: PipelineResult, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of the compiled program on the reference interpreter (integer codes)."""
    compiled = result.compiled
    feeds = program_inputs(compiled, inputs)  # float inputs quantized as the golden does
    run = run_program(compiled.program, compiled.arch, feeds, compiled.consts)
    return graph_outputs(compiled, run.outputs)


def assert_same_outputs(got: dict[str, np.ndarray], golden: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(golden), f"outputs {sorted(got)} != golden {sorted(golden)}"
    for name, want in golden.items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
        wrong = np.flatnonzero(got[name] != want)
        assert wrong.size == 0, (
            f"{name}: {wrong.size} of {want.size} elements differ from {GOLDEN.name}, first at "
            f"flat index {wrong[0]}: {got[name].flat[wrong[0]]} != {want.flat[wrong[0]]}; if "
            f"the change is intended, run `python {Path(__file__).name} --update`"
        )


@pytest.fixture(scope="module")
def compiled() -> PipelineResult:
    return compile_it()


def test_outputs_equal_the_golden_file(compiled: PipelineResult) -> None:
    golden = load_npz(GOLDEN)
    assert_same_outputs(run_on_machine(compiled, load_npz(INPUTS)), golden)


def test_program_is_bit_exact_and_accurate(compiled: PipelineResult) -> None:
    report = verify_compiled(compiled.compiled, compiled.float_graph, load_npz(INPUTS))
    assert report.bit_exact, report.divergence.message() if report.divergence else report
    assert report.cosine_vs_float >= MIN_COSINE


def update() -> None:
    np.savez(GOLDEN, **run_on_machine(compile_it(), load_npz(INPUTS)))  # type: ignore[arg-type]
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit(f"usage: python {sys.argv[0]} --update   (or run it with pytest)")
    update()
