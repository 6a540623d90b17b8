"""torch.compile(module, backend="cimc"): found through the entry point, graph breaks, options."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from cimc.dynamo import cimc_backend

ROOT = Path(__file__).resolve().parents[2]


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), 0))


def fake_install(site: Path) -> None:
    """A dist-info folder holding pyproject.toml's entry points, as `pip install` writes it:
    torch then finds the backend by name through importlib.metadata, as for an install."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = project["entry-points"]
    info = site / "cimc_entry_points-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cimc-entry-points\nVersion: 0\n")
    lines = [f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for group, eps
             in groups.items()]  # fmt: skip
    (info / "entry_points.txt").write_text("\n".join(lines))


HF_SCRIPT = """
import sys
sys.path.insert(0, {site!r})
import torch
import cimc
from cimc.zoo import build_model, example_inputs

module = build_model("gpt2", "tiny", head="lm")
ids, mask = example_inputs(module, seq_len=8)
with torch.no_grad():
    eager = module(ids, mask)
    api = cimc.compile(module, example_inputs=(ids, mask), arch="tiny").run(ids, mask)
    dynamo = torch.compile(module, backend="cimc", dynamic=False, options={{"arch": "tiny"}})
    compiled = dynamo(ids, mask)
cos = torch.nn.functional.cosine_similarity
for got in (api, compiled):
    print(float(cos(got.flatten().double(), eager.flatten().double(), 0)))
"""


def test_hf_module_through_cimc_compile_and_torch_compile(tmp_path: Path) -> None:
    """The acceptance test: GPT-2 (HF, random weights) through both entry points."""
    fake_install(tmp_path / "site")
    script = textwrap.dedent(HF_SCRIPT.format(site=str(tmp_path / "site")))
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    api, dynamo = (float(line) for line in proc.stdout.split())
    assert api >= 0.99 and dynamo >= 0.99, (api, dynamo)


class Broken(nn.Module):
    """Two linears with a graph break between them: two captured graphs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.gelu(self.fc1(x))
        torch._dynamo.graph_break()
        return self.fc2(h)


def recording_backend(seen: list[Any]) -> Any:
    def backend(gm: torch.fx.GraphModule, example_inputs: list, **kwargs: Any) -> Any:
        run = cimc_backend(gm, example_inputs, **kwargs)
        seen.append(run.compiled_model)  # type: ignore[attr-defined]
        return run

    return backend


def test_graph_break_runs_each_piece_on_cimc_with_the_options() -> None:
    torch._dynamo.reset()
    seen: list[Any] = []
    x = torch.randn(1, 6, 16)
    module = Broken().eval()
    compiled = torch.compile(
        module, backend=recording_backend(seen), dynamic=False, options={"arch": "tiny"}
    )
    with torch.no_grad():
        got, ref = compiled(x), module(x)
    assert len(seen) == 2 and all(m.arch.name == "tiny" for m in seen)
    assert all(m.result is not None and m.verify(**inputs(m)).bit_exact for m in seen)
    assert cos(got, ref) >= 0.99
    # the weights are the program's constants, not inputs: each piece takes one tensor
    assert [len([n for n in m.signature.inputs if n]) for m in seen] == [1, 1]


def inputs(model: Any) -> dict[str, torch.Tensor]:
    graph = model.result.float_graph
    return {n.name: torch.randn(n.type.shape) for n in graph.input_nodes()}


def test_dynamic_shapes_are_refused_with_the_fix() -> None:
    torch._dynamo.reset()
    compiled = torch.compile(Broken().eval(), backend=cimc_backend, dynamic=True)
    with pytest.raises(Exception, match="dynamic=False"), torch.no_grad():
        compiled(torch.randn(1, 6, 16))
