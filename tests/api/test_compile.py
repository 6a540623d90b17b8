"""cimc.compile / CompiledModel / cimc.load: run, verify, report, save and load again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import cimc
from cimc.errors import CimcError


class TwoHeads(nn.Module):
    """Keyword input, dict output: the structure the compiled model must give back."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.fc3 = nn.Linear(16, 32), nn.Linear(32, 16), nn.Linear(32, 8)

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.nn.functional.gelu(self.fc1(x))
        return {"y": self.fc2(h) * scale, "z": self.fc3(h)}


X = torch.randn(1, 6, 16)
S = torch.full((1, 6, 16), 0.5)


@pytest.fixture(scope="module")
def compiled() -> cimc.CompiledModel:
    return cimc.compile(TwoHeads(), example_inputs=(X, S), arch="tiny")


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), 0))


def test_public_names() -> None:
    assert set(cimc.__all__) == {
        "CimcError", "CompiledModel", "__version__", "compile", "import_model", "load",
    }  # fmt: skip
    for name in cimc.__all__:
        assert getattr(cimc, name) is not None
    assert (Path(cimc.__file__).parent / "py.typed").is_file()


def test_run_keeps_the_output_structure_and_is_close_to_eager() -> None:
    model = cimc.compile(TwoHeads(), example_inputs={"x": X, "scale": S}, arch="tiny")
    got = model.run(x=X, scale=S)
    with torch.no_grad():
        ref = TwoHeads()(X, S)
    assert set(got) == {"y", "z"} and isinstance(got["y"], torch.Tensor)
    for key in ("y", "z"):
        assert got[key].shape == ref[key].shape and got[key].dtype == torch.float32
        assert cos(got[key], ref[key]) >= 0.99, key
    assert torch.equal(model(x=X, scale=S)["y"], got["y"])  # __call__ is run


def test_run_equals_the_dequantized_golden(compiled: cimc.CompiledModel) -> None:
    """run() is the interpreter's codes times the output scale, nothing else."""
    from cimc.quant.golden import Golden, output_scales

    result = compiled.result
    assert result is not None
    x = {"x": X.numpy(), "scale": S.numpy()}
    golden = Golden(result.compiled.graph).run(x).outputs
    scales = output_scales(result.compiled.graph)
    codes = compiled.codes(X, S)
    got = compiled.run(X.numpy(), S.numpy())  # numpy in, numpy out
    for name, leaf in (("output_0", "y"), ("output_1", "z")):
        np.testing.assert_array_equal(codes[name], golden[name])
        expected = (golden[name] * scales[name]).astype(np.float32)
        np.testing.assert_array_equal(got[leaf], expected)


def test_verify_and_report(compiled: cimc.CompiledModel) -> None:
    report = compiled.verify(X, S)
    assert report.bit_exact and report.mismatched_elements == 0
    assert report.cosine_vs_float > 0.99
    summary = compiled.report()
    assert summary.arch == "tiny" and summary.makespan_cycles >= summary.lower_bound_cycles > 0


def test_save_and_load_run_the_same(compiled: cimc.CompiledModel, tmp_path: Path) -> None:
    path = compiled.save(tmp_path / "out" / "two.cimasm")
    loaded = cimc.load(path)
    for key, value in compiled.run(X, S).items():
        assert torch.equal(loaded.run(X, S)[key], value)
    assert loaded.report().makespan_cycles == compiled.report().makespan_cycles
    with pytest.raises(CimcError, match="no graph to verify"):
        loaded.verify(X, S)
    header = path.read_text().splitlines()[:4]
    assert header[1].startswith(".consts two.safetensors sha256:")
    assert header[2] == f"; cimc {cimc.__version__}, arch tiny"
    assert header[3] == "; pipeline idioms,check-canonical,quantize,backend"


def test_safetensors_metadata_describes_the_program(
    compiled: cimc.CompiledModel, tmp_path: Path
) -> None:
    from safetensors import safe_open

    path = compiled.save(tmp_path / "m.cimasm")
    with safe_open(str(path.with_suffix(".safetensors")), "numpy") as f:
        meta = f.metadata()
    assert meta["cimc_version"] == cimc.__version__ and meta["arch"] == "tiny"
    assert meta["pipeline"] == "idioms,check-canonical,quantize,backend"
    bindings = {b["graph_input"]: b for b in json.loads(meta["inputs"])}
    assert set(bindings) == {"x", "scale"}
    assert bindings["x"]["bits"] == 8 and all(b["scale"] > 0 for b in bindings.values())
    scales = json.loads(meta["output_scales"])
    assert set(scales) == {"output_0", "output_1"} and all(s > 0 for s in scales.values())


def test_bad_calls_are_one_line_errors(compiled: cimc.CompiledModel, tmp_path: Path) -> None:
    with pytest.raises(CimcError, match="unknown options"):
        cimc.compile(TwoHeads(), example_inputs=(X, S), arch="tiny", pipelin="x")
    with pytest.raises(CimcError, match="cannot compile a int"):
        cimc.compile(3)
    with pytest.raises(CimcError, match="needs example_inputs"):
        cimc.compile(TwoHeads(), arch="tiny")
    with pytest.raises(CimcError, match="structured"):
        compiled.run(X)
    with pytest.raises(CimcError, match=r"\.cimasm"):
        compiled.save(tmp_path / "m.txt")
    with pytest.raises(CimcError, match="elements"):
        compiled.run(torch.randn(1, 5, 16), S)


def test_onnx_file_by_position_and_name(tmp_path: Path) -> None:
    from cimc.zoo import build_model, example_inputs, export_onnx

    module = build_model("bert", "tiny")
    ids, mask = example_inputs(module, seq_len=8)
    path = export_onnx(module, (ids, mask), tmp_path / "bert.onnx", exporter="legacy")
    model = cimc.compile(path, arch="tiny", seq_len=8)
    by_position = model.run(ids, mask)
    assert torch.equal(model.run(input_ids=ids, attention_mask=mask), by_position)
    with torch.no_grad():
        assert cos(by_position, module(ids, mask)) >= 0.99
    with pytest.raises(CimcError, match="missing inputs"):
        model.run(ids)
