"""Model-native names: module paths from ONNX name scopes and torch's nn_module_stack, down
to the assembly comments `cimc inspect` shows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from onnx import helper

from cimc.cli import main
from cimc.importers.scopes import fx_module_path, onnx_location

GPT2_LINEAR = re.compile(
    r"\((model\.transformer\.h\.\d\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)"
    r"|model\.lm_head)/"
)


def test_dynamo_name_scopes() -> None:
    node = helper.make_node("Gemm", ["a", "b"], ["c"], name="node_addmm")
    scopes = "['', 'model', 'model.transformer.h.0.attn.c_attn', 'addmm']"
    node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=scopes)
    assert onnx_location(node) == "model.transformer.h.0.attn.c_attn/node_addmm"


def test_legacy_scope_path_and_plain_names() -> None:
    legacy = helper.make_node("Gemm", ["a"], ["c"], name="/model/encoder/layer.1/dense/Gemm")
    assert onnx_location(legacy) == "model.encoder.layer.1.dense/Gemm"
    assert onnx_location(helper.make_node("Relu", ["a"], ["c"], name="relu_7")) == "relu_7"
    assert onnx_location(helper.make_node("Relu", ["a"], ["c"])) == "Relu"
    root = helper.make_node("Relu", ["a"], ["c"], name="n")
    root.metadata_props.add(key="pkg.torch.onnx.name_scopes", value="['', 'relu']")
    assert onnx_location(root) == "n"


def test_nn_module_stack() -> None:
    stack = {
        "a": ("", "HiddenStates"),
        "b": ("model.transformer.h.0", "GPT2Block"),
        "c": ("model.transformer.h.0.attn.c_attn", "Conv1D"),
    }
    assert fx_module_path({"nn_module_stack": stack}) == "model.transformer.h.0.attn.c_attn"
    dynamo = {"x": ("L['self']._modules['model']._modules['fc']", "Linear")}
    assert fx_module_path({"nn_module_stack": dynamo}) == "model.fc"
    assert fx_module_path({}) == ""


def inspect_names(program: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main(["inspect", str(program), "--json", "-q"]) == 0
    return [n["name"] for n in json.loads(capsys.readouterr().out)["nodes"]]


def test_gpt2_linears_carry_their_module_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """GPT-2 through torch.export and through the dynamo ONNX exporter: every linear's
    instructions name its Hugging Face module (9 linears: 2 blocks x 4, and the head)."""
    import cimc
    from cimc.quant.dialect import QLinear
    from cimc.zoo import build_model, example_inputs, export_onnx

    module = build_model("gpt2", "tiny", head="lm")
    ids, mask = example_inputs(module, seq_len=8)
    exported = cimc.compile(module, example_inputs=(ids, mask), arch="tiny")
    onnx_file = export_onnx(module, (ids, mask), tmp_path / "gpt2.onnx", exporter="dynamo")
    from_onnx = cimc.compile(onnx_file, arch="tiny", seq_len=8)
    for name, model in (("pt2", exported), ("onnx", from_onnx)):
        assert model.result is not None
        graph = model.result.compiled.graph
        linears = [n.name for n in graph.nodes() if isinstance(n.op, QLinear)]
        assert len(linears) == 9, name
        shown = inspect_names(model.save(tmp_path / f"{name}.cimasm"), capsys)
        rows = [r for r in shown if any(r.startswith(f"%{lin} (") for lin in linears)]
        assert len(rows) == 9, (name, shown)
        unnamed = [r for r in rows if not GPT2_LINEAR.search(r)]
        assert unnamed == [], name
