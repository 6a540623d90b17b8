"""int4 weights through the whole pipeline: bit-exact programs, half the weight bytes,
the per-layer int8 override, the command-line flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cimc.cli import main
from cimc.pipeline import PipelineOptions, compile_model
from cimc.quant.dialect import QLinear
from cimc.reference.float_model import default_inputs
from cimc.verify import verify_compiled, weight_bytes_loaded
from tests.e2e.e2e_helpers import arch, zoo_graph


def _compile(graph, arch_name: str, **weights):  # type: ignore[no-untyped-def]
    result = compile_model(graph, arch(arch_name), PipelineOptions(**weights))
    inputs = default_inputs(result.float_graph, seed=3)
    return result, verify_compiled(result.compiled, result.float_graph, inputs)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_int4_models_are_bit_exact_with_half_the_weight_bytes(family: str) -> None:
    graph = zoo_graph(family)
    r8, v8 = _compile(graph, "default")
    r4, v4 = _compile(graph, "default", weight_bits=4)
    assert v8.bit_exact and v4.bit_exact
    loaded8 = weight_bytes_loaded(r8.compiled.program)
    loaded4 = weight_bytes_loaded(r4.compiled.program)
    assert loaded4 <= 0.55 * loaded8
    assert 0.8 < v4.cosine_vs_float < v8.cosine_vs_float  # coarser, not broken
    ops = {i.opcode for s in r4.compiled.program.cores for i in s.instrs}
    assert "mvm.i4" in ops


def test_keep_int8_layers_stay_int8_on_the_machine() -> None:
    graph = zoo_graph("gpt2")
    last = [n.name for n in graph.nodes() if n.op.NAME == "linear"][-1]
    result, report = _compile(graph, "default", weight_bits=4, keep_int8=(last,))
    assert report.bit_exact
    nodes = [n for n in result.graph.nodes() if isinstance(n.op, QLinear)]
    assert [n.op.plan.weight_bits for n in nodes if n.name == last] == [8]
    assert {n.op.plan.weight_bits for n in nodes if n.name != last} == {4}
    ops = {
        i.opcode
        for s in result.compiled.program.cores
        for i in s.instrs
        if i.opcode.startswith("mvm") and f"%{last} " in (i.comment or "")
    }
    assert ops and not any(op.startswith("mvm.i4") for op in ops)


def test_verify_weight_bits_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.e2e.e2e_helpers import mlp

    path = tmp_path / "mlp.pt2"
    module = mlp((40, 96, 16))
    torch.export.save(torch.export.export(module, (torch.zeros(1, 3, 40),)), str(path))
    argv = ["verify", str(path), "--arch", "tiny", "--json", "--quiet"]
    assert main([*argv, "--weight-bits", "4"]) == 0
    four = json.loads(capsys.readouterr().out)
    assert main(argv) == 0
    eight = json.loads(capsys.readouterr().out)
    assert four["bit_exact"] and four["weight_bytes_loaded"] * 2 == eight["weight_bytes_loaded"]
    assert main([*argv, "--weight-bits", "4", "--keep-int8", "nope"]) == 2
    assert "keep_int8 part 'nope' is in no linear layer's name" in capsys.readouterr().err


def test_group_scaled_int4_model_is_bit_exact() -> None:
    graph = zoo_graph("llama")
    result, report = _compile(graph, "tiny", weight_bits=4, weight_group=32)
    assert report.bit_exact
    plans = [n.op.plan for n in result.graph.nodes() if isinstance(n.op, QLinear)]
    assert plans and all(p.group_size == 32 and p.weight_bits == 4 for p in plans)
