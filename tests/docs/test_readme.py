"""README.md's shell blocks run as written, in a fresh folder, with this Python on PATH.

The set-up steps (make a venv, pip install) are not run: they are checked to be exactly
the steps .ci/run takes, so the two first-screen commands stay what CI proves. Everything
after them runs, with `.venv/bin/` meaning the folder of the Python running the tests.
Fast (default run): parsing, the CI check, every `cimc` line parses with today's options,
the machine-layer block. Slow (`-m slow`): every block, Python snippets included.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from cimc.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CI = ROOT / ".ci" / "run"
VENV_BIN = ".venv/bin/"
SETUP = ("python3 -m venv", f"{VENV_BIN}pip install")
_FENCE = re.compile(r"^```(?P<lang>[a-z]*)\n(?P<body>.*?)^```$", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Block:
    lang: str
    body: str
    line: int  # of the opening fence, for messages

    def commands(self) -> list[str]:
        """Shell command lines without comments and blank lines."""
        lines = (strip_comment(raw).strip() for raw in self.body.splitlines())
        return [line for line in lines if line]


def strip_comment(line: str) -> str:
    return re.sub(r"(^|\s)#.*$", "", line)


def blocks(lang: tuple[str, ...] = ("sh", "bash")) -> list[Block]:
    text = README.read_text(encoding="utf-8")
    found = []
    for m in _FENCE.finditer(text):
        if m.group("lang") in lang:
            found.append(Block(m.group("lang"), m.group("body"), text[: m.start()].count("\n") + 1))
    return found


def steps(command: str) -> list[str]:
    return [s.strip() for s in command.split("&&")]


def ci_steps() -> list[str]:
    """The commands of .ci/run (no shell settings, no cd, pip's -q dropped)."""
    out = []
    for line in CI.read_text(encoding="utf-8").splitlines():
        line = strip_comment(line).strip()
        if line and not line.startswith(("set ", "cd ")):
            out.append(line.replace(" -q ", " ") if "pip install" in line else line)
    return out


def split_setup(block: Block) -> tuple[list[str], list[str]]:
    """(set-up steps, the rest) of a block; set-up steps only lead a block."""
    todo = [s for c in block.commands() for s in steps(c)]
    k = 0
    while k < len(todo) and todo[k].startswith(SETUP):
        k += 1
    assert not any(s.startswith(SETUP) for s in todo[k:]), f"README:{block.line}: set-up late"
    return todo[:k], todo[k:]


# ---- fast ---------------------------------------------------------------------------------


def test_first_screen_has_the_two_setup_commands() -> None:
    first, second = blocks()[:2]
    assert len(first.commands()) == 1 and len(second.commands()) == 1
    head = README.read_text(encoding="utf-8").splitlines()[:25]
    assert f"{second.commands()[0]}" in "\n".join(head)


def test_test_command_is_exactly_what_ci_runs() -> None:
    second = blocks()[1]
    assert steps(second.commands()[0]) == ci_steps()


def test_install_command_is_cis_with_the_models_extra() -> None:
    setup, rest = split_setup(blocks()[0])
    ci = ci_steps()
    assert setup == [*ci[:2], ci[2].replace(".[test]", ".[models]")]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "cimc[models]" in project["optional-dependencies"]["test"]  # CI installs it all
    assert rest and all(s.startswith(f"{VENV_BIN}cimc ") for s in rest)


def cimc_lines() -> list[str]:
    out = []
    for block in blocks():
        for command in block.commands():
            for step in steps(command):
                words = shlex.split(step.removeprefix(VENV_BIN))
                if words and words[0] == "cimc":
                    out.append(" ".join(words[1:]))
    return out


@pytest.mark.parametrize("line", cimc_lines())
def test_every_cimc_line_parses_with_todays_options(line: str) -> None:
    args = build_parser().parse_args(shlex.split(line.split(">")[0]))
    assert callable(args.handler)


def run_block(block: Block, folder: Path, timeout: float = 600) -> None:
    _, rest = split_setup(block)
    if not rest:
        return
    script = "\n".join(s.replace(VENV_BIN, "") for s in rest)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env["PYTHONPATH"] = str(ROOT)  # this checkout's cimc, whatever is installed
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, (
        f"README.md:{block.line} failed ({done.returncode}):\n{script}\n{done.stderr[-3000:]}"
    )


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    """A fresh folder holding copies of what README commands read (isa/, examples/)."""
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("isa", "examples"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=ignore)
    return tmp_path


def test_machine_layer_block_runs(fresh: Path) -> None:
    block = next(b for b in blocks() if "cimc run isa/examples" in b.body)
    run_block(block, fresh)
    assert (fresh / "y.npz").is_file() and (fresh / "y.trace.json").is_file()


# ---- slow: every block --------------------------------------------------------------------


@pytest.mark.slow
def test_every_block_runs_in_order(fresh: Path) -> None:
    ci = blocks()[1]
    for block in blocks():
        if block != ci:  # the CI command runs this suite: checked above, not re-run
            run_block(block, fresh)
    for snippet in blocks(("python",)):
        done = subprocess.run(
            [sys.executable, "-c", snippet.body],
            cwd=fresh,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"README.md:{snippet.line}:\n{done.stderr[-3000:]}"
    assert (fresh / "demo" / "gpt2.cimasm").is_file() and (fresh / "plots").is_dir()
