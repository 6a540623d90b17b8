"""`lower` with candidates beside its plan: the fastest finished program is kept, and a
pipeline whose first stage count cannot be lowered falls back to another one."""

from __future__ import annotations

import pytest

import cimc.backend.stages.lowering as lowering
from cimc.backend.stages.program import finished
from cimc.errors import CimcError
from cimc.inspect.mapping import program_mapping
from cimc.ir.graph import Graph
from cimc.machine.arch import load_arch
from cimc.machine.schedule import simulate
from cimc.pipeline import PipelineOptions, compile_model
from tests.e2e.e2e_helpers import float_input, import_module, mlp


@pytest.fixture(scope="module")
def batched() -> Graph:
    """An MLP over a batch of 4: 4 micro-batches, so 2 and 4 stages fit `default`."""
    return import_module(mlp((48, 96, 64, 32)), float_input((4, 6, 48)))


def _refusing(stages: set[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """lower_graph raises for pipelines of these stage counts (as a scratchpad too small
    for a stage's share would)."""
    real = lowering.lower_graph

    def lower_graph(*args: object, **kwargs: object) -> object:
        pipeline = kwargs.get("pipeline", args[9] if len(args) > 9 else None)
        if pipeline is not None and len(pipeline.stages) in stages:  # type: ignore[attr-defined]
            raise CimcError(f"refused {len(pipeline.stages)} stages", "test")  # type: ignore[attr-defined]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(lowering, "lower_graph", lower_graph)


def test_pipeline_keeps_the_fastest_stage_count(batched: Graph) -> None:
    arch = load_arch("default")
    chosen = compile_model(batched.copy(), arch, PipelineOptions(mapping="pipeline"))
    makespan = simulate(chosen.compiled.program, arch).makespan
    for stages in (2, 4):
        pinned = compile_model(
            batched.copy(), arch, PipelineOptions(mapping="pipeline", stages=stages)
        )
        assert len(program_mapping(pinned.compiled.program).stages) == stages
        assert makespan <= simulate(finished(pinned.compiled), arch).makespan


def test_an_unlowerable_first_stage_count_falls_back(
    batched: Graph, monkeypatch: pytest.MonkeyPatch
) -> None:
    _refusing({2}, monkeypatch)
    result = compile_model(
        batched.copy(), load_arch("default"), PipelineOptions(mapping="pipeline")
    )
    assert len(program_mapping(result.compiled.program).stages) == 4


def test_no_lowerable_stage_count_raises_the_first_error(
    batched: Graph, monkeypatch: pytest.MonkeyPatch
) -> None:
    _refusing({2, 4}, monkeypatch)
    with pytest.raises(CimcError, match="refused 2 stages"):
        compile_model(batched.copy(), load_arch("default"), PipelineOptions(mapping="pipeline"))
