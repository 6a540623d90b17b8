"""A missing optional dependency is one line naming the extra to install, exit 2."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from cimc.extras import extra_providing

ROOT = Path(__file__).resolve().parents[1]

# Runs `cimc example` in an interpreter where `transformers` cannot be imported.
WITHOUT_TRANSFORMERS = """
import sys

class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "transformers":
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Hide())
from cimc.cli import main
sys.exit(main(["example", "bert-tiny", "-o", {out!r}, "-q"]))
"""


def test_example_without_transformers_names_the_extra(tmp_path: Path) -> None:
    script = textwrap.dedent(WITHOUT_TRANSFORMERS.format(out=str(tmp_path)))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "cimc example: needs the optional package 'transformers': pip install 'cimc[models]'\n"
    )
    assert not list(tmp_path.iterdir())


def test_extras_come_from_the_installed_metadata() -> None:
    assert extra_providing("transformers.models.gpt2") == "models"
    assert extra_providing("onnxruntime") == "models"
    assert extra_providing("hypothesis") == "test"
    assert extra_providing("numpy") is None  # a core dependency, not an extra
    assert extra_providing("no_such_package") is None


# `cimc sweep` where optuna cannot be imported (model and space are read first: both valid).
WITHOUT_OPTUNA = """
import sys

class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "optuna":
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Hide())
from cimc.cli import main
sys.exit(main(["sweep", "examples/models/tiny_encoder.onnx", "--space",
               "examples/sweep_space.toml", "-o", {out!r}, "-q"]))
"""


def test_sweep_without_optuna_names_the_extra(tmp_path: Path) -> None:
    script = textwrap.dedent(WITHOUT_OPTUNA.format(out=str(tmp_path / "out")))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "cimc sweep: needs the optional package 'optuna': pip install 'cimc[sweep]'\n"
    )
    assert not (tmp_path / "out").exists()
