"""`cimc --completion bash`: the script bash runs completes commands, options and values."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from cimc.cli import build_parser
from cimc.completion import bash_script

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def complete(*words: str) -> list[str]:
    """What bash offers for the last word of `words` (the command line so far)."""
    array = " ".join(f"'{w}'" for w in words)
    script = (
        f"{bash_script(build_parser())}\n"
        f"COMP_WORDS=({array}); COMP_CWORD={len(words) - 1}; _cimc\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.parametrize(
    ("words", "offered"),
    [
        (("cimc", "ver"), ["verify"]),
        (("cimc", "run", "--s"), ["--seed"]),
        (("cimc", "inspect", "p.cimasm", "--j"), ["--json"]),
        (("cimc", "compile", "m.onnx", "--arch", "ti"), ["tiny"]),
        (("cimc", "report", "p.cimasm", "--plot-format", "s"), ["svg"]),
        (("cimc", "compile", "m.onnx", "--streaming", "d"), ["double-buffer"]),
    ],
)
def test_bash_completes(words: tuple[str, ...], offered: list[str]) -> None:
    assert complete(*words) == offered


def test_the_option_prints_the_script() -> None:
    from cimc.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--completion", "bash"])
    assert done.value.code == 0
