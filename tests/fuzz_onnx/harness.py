"""The ONNX fuzz oracle: a mutated model through `cimc.api.import_model` (and the CLI).

Acceptable outcomes: a `CimcError` whose text is one line, or an import whose graph
verifies and whose float execution equals onnxruntime's on the same inputs (when
onnxruntime accepts the mutated model too). Anything else raises `FuzzBug`. Absurd shapes
must be refused before allocating: numpy/torch allocations are traced and a peak above
`MEMORY_LIMIT` is a finding.
"""

from __future__ import annotations

import contextlib
import io
import random
import traceback
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import torch

from cimc.errors import CimcError
from tests.fuzz.campaign import FuzzBug, Result, check_error
from tests.fuzz_onnx.mutate import mutate

MEMORY_LIMIT = 256 << 20  # bytes a mutated tiny model may allocate while importing
_BASES: dict[str, bytes] = {}


class _Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(12, 20), torch.nn.Linear(20, 5)
        self.norm = torch.nn.LayerNorm(12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(x))))


def _export(module: torch.nn.Module, x: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (x,), buf, input_names=["x"], dynamo=False)  # type: ignore[arg-type]
    return buf.getvalue()


def base_models() -> dict[str, bytes]:
    """Small legacy exports: an MLP with LayerNorm, two random transformer blocks."""
    if not _BASES:
        from tests.differential.generator import build_module, example_input, random_spec

        torch.manual_seed(0)
        _BASES["mlp"] = _export(_Mlp(), torch.randn(1, 3, 12))
        for seed in (2, 5):
            spec = random_spec(seed)
            x = torch.from_numpy(example_input(spec))
            _BASES[f"transformer{seed}"] = _export(build_module(spec), x)
    return _BASES


def _ort_outputs(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """onnxruntime's outputs, or None when it refuses the mutated model."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(None, feeds), strict=True))
    except Exception:  # noqa: BLE001 - onnxruntime refusing is not our finding
        return None


def _extreme_weights(path: Path) -> bool:
    """Flipped exponent bits make weights like 5e36: two float engines then legitimately
    disagree (overflow order, NaN propagation), so only sane weights are compared (the
    initializers and the Constant nodes' values: fuzz seed 22289 flipped a rotary table)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    constants = [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute
                 if a.type == onnx.AttributeProto.TENSOR]  # fmt: skip
    for tensor in [*graph.initializer, *constants]:
        array = numpy_helper.to_array(tensor)
        floats = array.dtype.kind == "f" and array.size > 0
        if floats and (not np.isfinite(array).all() or float(np.abs(array).max()) > 1e6):
            return True
    return False


def _compare_with_ort(graph: object, path: Path) -> str:
    from cimc.reference.float_model import default_inputs, run_graph

    if _extreme_weights(path):
        return "imported (weights beyond 1e6 or not finite: float results not compared)"
    feeds = default_inputs(graph, seed=0)  # type: ignore[arg-type]
    ours = run_graph(graph, feeds)  # type: ignore[arg-type]
    theirs = _ort_outputs(path, feeds)
    if theirs is None:
        return "imported (onnxruntime refuses it)"
    for name, want in sorted(theirs.items()):
        got = ours.get(name)
        if got is None or got.shape != want.shape:
            raise FuzzBug("wrong-import", f"output {name}: shape {want.shape} vs cimc {got}")
        ok = np.allclose(got, want, rtol=1e-3, atol=1e-4, equal_nan=True)
        if not ok:
            err = float(np.nanmax(np.abs(got.astype(np.float64) - want)))
            raise FuzzBug("wrong-import", f"output {name} differs from onnxruntime by {err:g}")
    return "imported, equal to onnxruntime"


def import_checked(path: Path) -> tuple[str, str]:
    """('refused', message) or ('imported', how it compared); FuzzBug otherwise."""
    from cimc.api import import_model

    tracemalloc.start()
    try:
        graph = import_model(path)
    except CimcError as e:
        return "refused", check_error(e)
    except Exception as e:  # noqa: BLE001 - the finding
        tb = traceback.format_exc(limit=-3)
        raise FuzzBug("uncaught", f"{type(e).__name__}: {e}\n{tb}") from None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        if peak > MEMORY_LIMIT:
            raise FuzzBug("memory", f"import allocated {peak >> 20} MiB before answering")
    graph.verify()
    try:
        return "imported", _compare_with_ort(graph, path)
    except CimcError as e:  # e.g. a NaN-weight model refused at run time
        return "imported", "run refused: " + check_error(e)


def run_cli(path: Path) -> tuple[int, str]:
    """`cimc compile PATH` in-process: (exit code, stderr)."""
    from cimc.cli import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(["compile", str(path), "--arch", "tiny", "-o", str(path.with_suffix(""))])
        except SystemExit as e:
            code = int(e.code or 0)
        except Exception as e:  # noqa: BLE001 - the finding
            raise FuzzBug("cli-uncaught", f"{type(e).__name__}: {e}") from None
    return code, err.getvalue()


def check_cli(path: Path, imported: bool) -> None:
    code, err = run_cli(path)
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("cimc: no calib")]
    if code == 2 and len(lines) == 1:
        return
    if code == 0 and imported:
        return
    raise FuzzBug("cli", f"exit {code}, stderr {err[-400:]!r}")


def fuzz_one(seed: int, workdir: Path, cli: bool = False) -> Result:
    rng = random.Random(seed)
    bases = base_models()
    base = sorted(bases)[seed % len(bases)]
    mutation, data = mutate(bases[base], rng)
    path = workdir / f"fuzz{seed}.onnx"
    path.write_bytes(data)
    outcome, detail = import_checked(path)
    if cli:
        check_cli(path, outcome == "imported")
    return Result(seed, base, mutation, outcome, detail)
