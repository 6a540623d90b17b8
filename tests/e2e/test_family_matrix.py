"""The family matrix (tests/e2e/family_matrix.py) as slow tests: every family x exporter x
model preset x arch bit-exact against the integer golden, cosine vs float above 0.99."""

from __future__ import annotations

import pytest

from tests.e2e.family_matrix import ARCHS, Case, cases, run_case


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("case", cases(), ids=lambda c: c.name)
def test_family_matrix(case: Case, arch: str) -> None:
    outcome = run_case(case, arch)
    assert outcome.bit_exact
    assert outcome.cosine > 0.99
