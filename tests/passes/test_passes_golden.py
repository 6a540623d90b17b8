"""Golden tests written in IR text: `// RUN: pipeline`, input graph, `// EXPECT:`, output.

The printed result must equal the expected text exactly, and both graphs must compute the
same outputs. Add a case by dropping a file into tests/passes/data/.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cimc.ir.parser import parse_graph
from cimc.ir.printer import print_graph
from cimc.passes.manager import PassManager, parse_pipeline
from cimc.reference.float_model import default_inputs, run_graph

CASES = sorted((Path(__file__).parent / "data").glob("*.ir"))


def split_case(text: str) -> tuple[str, str, str]:
    first, _, rest = text.partition("\n")
    assert first.startswith("// RUN: "), "a golden case starts with '// RUN: pipeline'"
    source, _, expected = rest.partition("// EXPECT:\n")
    return first.removeprefix("// RUN: ").strip(), source, expected


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_golden_case(case: Path) -> None:
    pipeline, source, expected = split_case(case.read_text())
    graph = parse_graph(source, random_seed=0, source=str(case))
    before = graph.copy()
    PassManager(parse_pipeline(pipeline)).run(graph)
    assert print_graph(graph) == expected
    inputs = default_inputs(before, seed=1)
    want, got = run_graph(before, inputs), run_graph(graph, inputs)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_there_are_golden_cases() -> None:
    assert len(CASES) >= 3
