"""`cimc run/report/inspect/--help` must not pay for torch; model commands import it lazily."""

from __future__ import annotations

import subprocess
import sys


def test_cli_startup_does_not_import_torch() -> None:
    script = (
        "import sys; from cimc.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'transformers', 'onnx') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_compile_command_default_pipeline_matches_the_pipeline() -> None:
    from cimc.commands.compile import DEFAULT_PIPELINE as shown
    from cimc.pipeline import DEFAULT_PIPELINE

    assert shown == DEFAULT_PIPELINE
