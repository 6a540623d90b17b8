"""Programs and constants on disk: atomic, self-describing, and never run with another
compile's constants (the fault-injection test kills writers with SIGKILL)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import cimc
from cimc.errors import CimcError
from cimc.machine import artifact
from cimc.machine.arch import load_arch
from cimc.machine.interpreter import run_program
from cimc.machine.parser import load_program, parse_program

ROOT = Path(__file__).resolve().parents[2]
X = torch.randn(1, 4, 16, generator=torch.Generator().manual_seed(3))


class Mlp(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, cimc.CompiledModel]:
    """Two compiles of one architecture with other weights: the same program text but for
    the hash, constants of the same names and shapes (the case a mix-up runs silently)."""
    return {
        name: cimc.compile(Mlp(seed), example_inputs=(X,), arch="tiny")
        for name, seed in (("a", 0), ("b", 1))
    }


def feeds(model: cimc.CompiledModel) -> dict[str, np.ndarray]:
    from cimc.backend.builder.compiled import program_inputs

    assert model.result is not None
    return program_inputs(model.result.compiled, {"x": X.numpy()})


def cimc_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cimc", *args], capture_output=True, text=True, timeout=300
    )


def test_modes_and_no_temporaries(pair: dict[str, cimc.CompiledModel], tmp_path: Path) -> None:
    path = pair["a"].save(tmp_path / "m.cimasm")
    umask = os.umask(0)
    os.umask(umask)
    for f in (path, path.with_suffix(".safetensors")):
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.cimasm", "m.safetensors"]


def test_writing_twice_gives_the_same_bytes(
    pair: dict[str, cimc.CompiledModel], tmp_path: Path
) -> None:
    one = pair["a"].save(tmp_path / "1" / "m.cimasm")
    two = pair["a"].save(tmp_path / "2" / "m.cimasm")
    for suffix in (".cimasm", ".safetensors"):
        assert one.with_suffix(suffix).read_bytes() == two.with_suffix(suffix).read_bytes()


def test_another_compiles_constants_are_refused_by_run_inspect_report(
    pair: dict[str, cimc.CompiledModel], tmp_path: Path
) -> None:
    a = pair["a"].save(tmp_path / "a" / "m.cimasm")
    b = pair["b"].save(tmp_path / "b" / "m.cimasm")
    assert a.read_text().splitlines()[2:] == b.read_text().splitlines()[2:]  # only hash, so
    inputs = tmp_path / "in.npz"
    np.savez(inputs, **feeds(pair["a"]))
    assert cimc_cli("run", str(a), "--inputs", str(inputs), "-q").returncode == 0
    shutil.copyfile(b.with_suffix(".safetensors"), a.with_suffix(".safetensors"))
    for argv in (["run", str(a), "--inputs", str(inputs)], ["inspect", str(a)], ["report", str(a)]):
        done = cimc_cli(*argv, "-q") if argv[0] != "inspect" else cimc_cli(*argv)
        assert done.returncode == 2 and done.stdout == "", argv
        assert done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith(f"{a}:2:9: constants file m.safetensors is not the one")


def test_a_write_killed_between_the_renames_leaves_a_refused_pair(
    pair: dict[str, cimc.CompiledModel], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The constants are renamed first: a death before the program's rename leaves the old
    program beside the new constants, which the old program's hash refuses."""
    path = pair["a"].save(tmp_path / "m.cimasm")
    real = os.replace
    renames: list[str] = []

    def dies_after_one(src: str, dst: str) -> None:
        if renames:
            raise KeyboardInterrupt  # stands for the process dying here
        renames.append(str(dst))
        real(src, dst)

    monkeypatch.setattr(artifact.os, "replace", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        pair["b"].save(path)
    monkeypatch.undo()
    assert renames == [str(path.with_suffix(".safetensors"))]
    with pytest.raises(CimcError, match="is not the one this program was compiled with"):
        run_program(load_program(path), load_arch("tiny"), feeds(pair["a"]))


# The writer killed by the test: writes compile A's then compile B's files over the same
# names, forever, with the writer cimc.compile's save uses (cimc.machine.artifact).
WRITER = """
import sys
from pathlib import Path
from cimc.machine.artifact import write_artifact
from cimc.machine.consts_file import load_consts_and_metadata
from cimc.machine.parser import load_program, parse_program

target = Path(sys.argv[1])
sources = []
for src in sys.argv[2:]:
    program = load_program(src)
    consts, metadata = load_consts_and_metadata(program)
    sources.append((program, consts, metadata))
print("ready", flush=True)
while True:
    for program, consts, metadata in sources:
        write_artifact([(target, program)], consts, target.with_suffix(".safetensors"), metadata)
"""


def test_sigkilled_writers_never_let_a_program_run_with_other_constants(
    pair: dict[str, cimc.CompiledModel], tmp_path: Path
) -> None:
    sources = {k: m.save(tmp_path / k / "m.cimasm") for k, m in pair.items()}
    texts = {path.read_text(): k for k, path in sources.items()}
    expected = {k: m.codes(X)["output"] for k, m in pair.items()}
    target = tmp_path / "out" / "m.cimasm"
    target.parent.mkdir()
    arch, rng = load_arch("tiny"), random.Random(0)
    counts: Counter[str] = Counter()
    for _ in range(12):
        writer = _start_writer(target, sources)
        time.sleep(rng.uniform(0.0, 0.3))
        for _ in range(3):  # runs while the writer writes (a concurrent compile)
            counts[_outcome(target, texts, expected, pair["a"], arch)] += 1
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        counts[_outcome(target, texts, expected, pair["a"], arch) + " after kill"] += 1
    print(dict(sorted(counts.items())))
    assert not [k for k in counts if k.startswith("WRONG")], counts
    assert (
        counts["ran A"] + counts["ran B"] + counts["ran A after kill"] + counts["ran B after kill"]
        > 0
    ), counts


def _start_writer(target: Path, sources: dict[str, Path]) -> subprocess.Popen[str]:
    argv = [sys.executable, "-c", textwrap.dedent(WRITER), str(target)]
    writer = subprocess.Popen(
        [*argv, *(str(p) for p in sources.values())], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    return writer


def _outcome(
    target: Path,
    texts: dict[str, str],
    expected: dict[str, np.ndarray],
    model: cimc.CompiledModel,
    arch: object,
) -> str:
    """ "ran A/B" (outputs of that compile), "refused", "absent", or "WRONG ..."."""
    try:
        text = target.read_text()
    except FileNotFoundError:
        return "absent"
    which = texts.get(text)
    if which is None:
        return "WRONG program text (partial or mixed)"
    try:
        program = parse_program(text, str(target))  # the text just read, not a newer file
        run = run_program(program, arch, feeds(model))  # type: ignore[arg-type]
    except CimcError as e:
        if "not the one this program" in e.message or "was replaced while" in e.message:
            return "refused"
        if "not found" in e.message:
            return "absent"
        return f"WRONG error: {e}"
    got = run.outputs[next(iter(run.outputs))].reshape(expected[which].shape)
    same = np.array_equal(got, expected[which])
    return f"ran {which.upper()}" if same else f"WRONG outputs of {which}"
