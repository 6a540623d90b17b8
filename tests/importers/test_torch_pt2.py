""".pt2 files: torch.export.save round trips, dynamic dims bound at import, bad files."""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cimc.errors import CimcError
from cimc.importers.torch_export import import_torch
from cimc.reference.float_model import FloatModel
from cimc.zoo import build_model, example_inputs, export_torch


@functools.cache
def llama() -> torch.nn.Module:
    return build_model("llama", head="lm", num_hidden_layers=1)


@functools.cache
def saved(tmp_dir: Path, dynamic: bool) -> Path:
    model = llama()
    program = export_torch(model, example_inputs(model, seq_len=7), dynamic=dynamic)
    path = tmp_dir / f"llama_{'dynamic' if dynamic else 'static'}.pt2"
    torch.export.save(program, path)
    return path


@functools.cache
def loaded(tmp_dir: Path, dynamic: bool) -> torch.export.ExportedProgram:
    """The saved program loaded once (binding errors do not depend on the file)."""
    return torch.export.load(saved(tmp_dir, dynamic))


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pt2")


def check_outputs(graph, batch: int, seq_len: int) -> None:
    model = llama()
    ids, mask = example_inputs(model, batch=batch, seq_len=seq_len, padded=True, seed=3)
    got = FloatModel(graph).run({"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    with torch.no_grad():
        want = model(ids, mask).numpy()
    assert got["output"].shape == want.shape
    assert np.abs(got["output"] - want).max() / np.abs(want).max() < 1e-4


def test_static_round_trip(tmp_dir: Path) -> None:
    graph = import_torch(saved(tmp_dir, False))
    assert graph.name == "llama_static"
    assert [n.type.shape for n in graph.input_nodes()] == [(1, 7), (1, 7)]
    check_outputs(graph, 1, 7)


def test_dynamic_program_bound_by_seq_len(tmp_dir: Path) -> None:
    graph = import_torch(saved(tmp_dir, True), seq_len=12)
    inputs = {n.name: n for n in graph.input_nodes()}
    assert inputs["input_ids"].type.shape == (1, 12)  # batch defaults to 1
    assert inputs["input_ids"].op.meaning == "token_ids"
    assert inputs["attention_mask"].op.meaning == "attention_mask"
    check_outputs(graph, 1, 12)


def test_dynamic_program_bound_by_shapes(tmp_dir: Path) -> None:
    graph = import_torch(loaded(tmp_dir, True), shapes={"input_ids": (3, 5)})
    assert [n.type.shape for n in graph.input_nodes()] == [(3, 5), (3, 5)]
    check_outputs(graph, 3, 5)


def test_dynamic_dims_need_a_binding(tmp_dir: Path) -> None:
    with pytest.raises(CimcError, match=r"input input_ids axis 1 is dynamic .*seq_len="):
        import_torch(loaded(tmp_dir, True))


def test_binding_outside_exported_range(tmp_dir: Path) -> None:
    with pytest.raises(CimcError, match=r"outside the exported range"):
        import_torch(loaded(tmp_dir, True), seq_len=1000)


def test_static_program_refuses_other_shapes(tmp_dir: Path) -> None:
    with pytest.raises(CimcError, match=r"exported with static shape \[1, 7\]"):
        import_torch(loaded(tmp_dir, False), shapes={"input_ids": (1, 9)})


def test_shapes_naming_unknown_input(tmp_dir: Path) -> None:
    with pytest.raises(CimcError, match=r"unknown input\(s\) token_ids; inputs: input_ids"):
        import_torch(loaded(tmp_dir, True), shapes={"token_ids": (1, 4)})


def test_shapes_with_wrong_rank(tmp_dir: Path) -> None:
    with pytest.raises(CimcError, match=r"rank 2 but its given shape \[4\] has rank 1"):
        import_torch(loaded(tmp_dir, True), shapes={"input_ids": (4,)})


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pt2"
    with pytest.raises(CimcError, match="no such file") as info:
        import_torch(path)
    assert info.value.location == str(path)


def test_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "text.pt2"
    path.write_text("hello")
    with pytest.raises(CimcError, match="not a .pt2 archive"):
        import_torch(path)


def test_zip_that_is_not_an_export(tmp_path: Path) -> None:
    path = tmp_path / "other.pt2"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("data.txt", "not a program")
    with pytest.raises(CimcError, match="torch.export.load failed") as info:
        import_torch(path)
    assert "\n" not in str(info.value)
