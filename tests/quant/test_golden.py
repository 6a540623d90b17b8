"""The integer golden: deterministic, independent of the machine, strict about its inputs."""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_quantize import decoder_graph, encoder_graph, qop, quantized

from cimc.errors import CimcError
from cimc.quant.calibrate import generated_samples
from cimc.quant.golden import Golden, dequantize_outputs, run_golden, value_scales

ROOT = Path(__file__).resolve().parents[2]


def digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        h.update(name.encode() + arrays[name].tobytes() + str(arrays[name].dtype).encode())
    return h.hexdigest()


def test_identical_integers_across_runs_and_quantizations() -> None:
    g = encoder_graph()
    s = generated_samples(g, 1, seed=42)[0]
    first = run_golden(quantized(g), s, keep_all=True)
    again = run_golden(quantized(encoder_graph()), s, keep_all=True)  # rebuilt from scratch
    assert digest(first.values) == digest(again.values)
    assert digest(first.outputs) == digest(again.outputs)
    assert first.outputs["hidden"].std() > 100  # codes, not a degenerate all-zero output


SCRIPT = """
import hashlib, json, sys
sys.path.insert(0, {tests!r})
from test_quantize import encoder_graph, quantized
from cimc.quant.calibrate import generated_samples
from cimc.quant.golden import run_golden
g = encoder_graph()
out = run_golden(quantized(g), generated_samples(g, 1, seed=42)[0]).outputs["hidden"]
print(json.dumps({{"sha": hashlib.sha256(out.tobytes()).hexdigest(),
                  "machine": sorted(m for m in sys.modules if m.startswith("cimc.machine"))}}))
"""


@pytest.mark.slow
def test_fresh_process_gives_the_same_integers_without_the_machine() -> None:
    g = encoder_graph()
    out = run_golden(quantized(g), generated_samples(g, 1, seed=42)[0]).outputs["hidden"]
    script = SCRIPT.format(tests=str(ROOT / "tests" / "quant"))
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["sha"] == hashlib.sha256(out.tobytes()).hexdigest()
    assert report["machine"] == []  # the golden never imports the interpreter


def cimc_imports(module: str) -> set[str]:
    """cimc modules imported (transitively, statically) by `module`."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = ROOT / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = ROOT / name.replace(".", "/") / "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cimc"):
                todo.append(node.module)
                subs = [f"{node.module}.{a.name}" for a in node.names]
                todo += [m for m in subs if (ROOT / (m.replace(".", "/") + ".py")).exists()]
            elif isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.startswith("cimc")]
    return seen


def test_golden_does_not_import_the_machine() -> None:
    reached = cimc_imports("cimc.quant.golden")
    assert "cimc.quant.recipes" in reached and "cimc.quant.intops" in reached
    assert not [m for m in reached if m.startswith("cimc.machine")]


def test_every_value_fits_its_declared_type() -> None:
    q = quantized(decoder_graph())
    s = generated_samples(decoder_graph(), 1, seed=7)[0]
    result = run_golden(q, s, keep_all=True)
    assert list(result.values) == [n.name for n in q.nodes()]
    for node in q.nodes():
        value = result.values[node.name]
        assert value.dtype == node.type.dtype.numpy and value.shape == node.type.shape
    scales = value_scales(q)
    assert scales["reshape"] == qop(q, "att").scale  # through transpose + reshape
    real = dequantize_outputs(q, result.outputs)["y"]
    assert real.dtype == np.float64 and np.allclose(real, result.outputs["y"] * scales["y"])


def test_float_graph_is_refused() -> None:
    with pytest.raises(CimcError, match="cannot run op embedding") as e:
        Golden(encoder_graph())
    assert e.value.location == "%emb"


def test_input_errors() -> None:
    g = encoder_graph()
    q = quantized(g)
    s = generated_samples(g, 1)[0]
    with pytest.raises(CimcError, match=r"missing \['attention_mask'\]"):
        run_golden(q, {"input_ids": s["input_ids"]})
    with pytest.raises(CimcError, match="expected i64"):
        run_golden(q, dict(s, input_ids=s["input_ids"][:, :3]))
    with pytest.raises(CimcError, match="token id outside the vocabulary") as e:
        run_golden(q, dict(s, input_ids=np.full_like(s["input_ids"], 10_000)))
    assert e.value.location == "%emb"


def test_golden_is_not_the_float_model() -> None:
    """Dequantized golden differs from float (it is integer) but stays close."""
    g = encoder_graph()
    q = quantized(g)
    s = generated_samples(g, 1, seed=5)[0]
    from cimc.reference.float_model import run_graph

    ref = run_graph(g, s)["hidden"]
    got = dequantize_outputs(q, run_golden(q, s).outputs)["hidden"]
    err = np.abs(got - ref)
    assert 0 < err.max() < 0.05 * np.abs(ref).max()


def test_host_quantize_rounds_and_saturates() -> None:
    from cimc.quant.dialect import QQuantize
    from cimc.quant.golden import host_quantize

    op = QQuantize(scale=0.5, bits=8)
    x = np.array([0.24, 0.25, 0.75, -0.75, 63.4, 1000.0, -1000.0], np.float32)
    assert host_quantize(op, x).tolist() == [0, 0, 2, -2, 127, 127, -127]  # ties to even
    q = quantized(decoder_graph())
    s = generated_samples(decoder_graph(), 1, seed=3)[0]
    codes = run_golden(q, s, keep_all=True).values["x_q"]
    graph_op = qop(q, "x_q")
    assert isinstance(graph_op, QQuantize)
    assert np.array_equal(codes, host_quantize(graph_op, s["x"]))


def test_codes_outside_the_declared_type_are_a_located_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cimc.quant.dialect import QLinear
    from cimc.quant.golden import GOLDEN_KERNELS

    q = quantized(decoder_graph())
    first = next(n for n in q.nodes() if isinstance(n.op, QLinear))
    linear = GOLDEN_KERNELS[QLinear]
    monkeypatch.setitem(GOLDEN_KERNELS, QLinear, lambda op, a: linear(op, a) * 0 + 2**20)
    with pytest.raises(CimcError) as e:
        run_golden(q, generated_samples(decoder_graph(), 1, seed=3)[0])
    assert str(e.value) == f"{first.where}: golden codes do not fit {first.type.dtype}"
