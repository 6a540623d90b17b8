"""Fixtures of the bad-input corpus: a scratch copy of an example program and its files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cimc.resources import isa_dir


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """tmp_path holding matmul_2core.{cimasm,safetensors,inputs.npz} (arch `tiny`)."""
    for path in (isa_dir() / "examples").glob("matmul_2core.*"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path
