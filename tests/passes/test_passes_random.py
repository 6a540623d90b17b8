"""Random graphs full of foldable, duplicated and no-op nodes: every pass keeps the outputs
bit for bit, and every graph survives print -> parse -> print."""

from __future__ import annotations

import numpy as np
import pytest
from random_graphs import RandomGraph

from cimc.ir.parser import parse_graph
from cimc.ir.printer import print_graph, referenced_constants
from cimc.passes.manager import PassManager, parse_pipeline
from cimc.reference.float_model import default_inputs, run_graph

PIPELINES = ["dce", "fold-constants", "cse", "simplify", "canonicalize"]


@pytest.mark.parametrize("seed", range(12))
def test_random_graph_passes_keep_outputs_bit_exact(seed: int) -> None:
    graph = RandomGraph(seed).build(30)
    inputs = default_inputs(graph, seed=seed)
    want = run_graph(graph, inputs)
    for pipeline in PIPELINES:
        after = graph.copy()
        PassManager(parse_pipeline(pipeline)).run(after)
        got = run_graph(after, inputs)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{pipeline}: {name}")
        assert len(after) <= len(graph)


@pytest.mark.parametrize("seed", range(12))
def test_random_graph_text_round_trip(seed: int) -> None:
    graph = RandomGraph(seed).build(30)
    text = print_graph(graph)
    again = parse_graph(text, referenced_constants(graph))
    assert print_graph(again) == text
