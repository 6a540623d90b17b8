"""ONNX's backend node tests through the importer and the float reference (see
onnx_node_suite.py): every case passes or is refused for a listed reason; no wrong
answer, no crash. In chunks, so the workers share them; the count is the slow test's."""

from __future__ import annotations

import tempfile
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.importers.onnx_node_suite import REFUSALS, Outcome, cases, reason, run_case

CHUNKS = 8
MIN_PASSING = 550  # 558 of 1884 at the function-body expansion (was 442)


@cache
def _cases() -> list[Any]:
    return cases()


def _run(chunk: int | None) -> list[Outcome]:
    picked = _cases() if chunk is None else _cases()[chunk::CHUNKS]
    with tempfile.TemporaryDirectory() as tmp:
        return [run_case(c, Path(tmp)) for c in picked]


def _problems(outcomes: list[Outcome]) -> list[str]:
    bad = [o for o in outcomes if o.kind in ("wrong", "crash")]
    bad += [o for o in outcomes if o.kind == "refused" and reason(o.detail) is None]
    return [f"{o.kind} {o.name}: {o.detail[:160]}" for o in bad]


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_node_cases_pass_or_are_refused_for_a_listed_reason(chunk: int) -> None:
    outcomes = _run(chunk)
    assert outcomes and not _problems(outcomes), "\n".join(_problems(outcomes))
    assert any(o.kind == "pass" for o in outcomes)


@pytest.mark.slow
def test_node_suite_count() -> None:
    outcomes = _run(None)
    kinds = Counter(o.kind for o in outcomes)
    reasons = Counter(reason(o.detail) for o in outcomes if o.kind == "refused")
    print(f"ONNX node tests: {dict(kinds)}; refused by reason: {dict(reasons)}")
    assert not _problems(outcomes)
    assert kinds["pass"] >= MIN_PASSING
    assert set(reasons) <= set(REFUSALS)
