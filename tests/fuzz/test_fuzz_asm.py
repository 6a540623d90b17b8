"""A fixed-seed slice of the machine-layer fuzzer (the long campaign: benchmarks/fuzz_asm.py).

Generated programs on every preset, mutated examples and mutated arch files all go through
tests/fuzz/harness.py: a located one-line CimcError or a deterministic, consistent result.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from cimc.machine.arch import load_arch
from cimc.machine.printer import print_program
from cimc.machine.program import Program
from cimc.resources import isa_dir
from tests.fuzz.harness import Case, Workdir, check_case, check_fast_parser
from tests.fuzz.mutate import mutate, mutate_toml
from tests.machine.strategies import Geometry, programs

PRESETS = ("tiny", "default", "large", "zigzag-dimc")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Workdir:
    return Workdir(tmp_path_factory.mktemp("fuzz"))


def _outcomes(cases: list[Case], work: Workdir, seed: int) -> Counter[str]:
    rng = random.Random(seed)
    return Counter(check_case(case, work, rng, parser_check=True) for case in cases)


@pytest.mark.parametrize("preset", PRESETS)
def test_generated_programs(preset: str, work: Workdir) -> None:
    seen: Counter[str] = Counter()

    @settings(
        max_examples=8,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(programs(Geometry.of(load_arch(preset))))
    def check(program: Program) -> None:
        case = Case(print_program(program), "gen.cimasm", input_noise=0.0)
        seen[check_case(case, work, random.Random(0))] += 1

    check()
    assert "load error" not in seen  # generated programs are valid
    assert sum(seen.values()) == 8


def test_mutated_examples(work: Workdir) -> None:
    rng = random.Random(1)
    seeds = Workdir.seeds()
    cases = []
    for _ in range(200):
        name, text = rng.choice(seeds)
        cases.append(Case(mutate(text, rng, tuple(t for _, t in seeds)), name))
    outcomes = _outcomes(cases, work, 2)
    assert outcomes["load error"] > 100  # most mutations break the program...
    assert outcomes["ok"] + outcomes["run error"] > 10  # ...some still run


def test_mutated_arch_files(work: Workdir) -> None:
    rng = random.Random(3)
    cases = []
    for name, text in Workdir.seeds():
        toml = (isa_dir() / "arch" / f"{text.split()[1]}.toml").read_text()
        cases += [Case(text, name, mutate_toml(toml, rng), input_noise=0.0) for _ in range(15)]
    outcomes = _outcomes(cases, work, 4)
    assert outcomes["load error"] > 5 and outcomes["ok"] > 5


def test_fast_parser_agrees_on_mutants() -> None:
    rng = random.Random(5)
    seeds = [text for _, text in Workdir.seeds()]
    for _ in range(150):
        check_fast_parser(mutate(rng.choice(seeds), rng))


def test_oracle_rejects_unlocated_errors(work: Workdir) -> None:
    """The oracle itself: a multi-line or unlocated message is reported as a finding."""
    from cimc.errors import CimcError
    from tests.fuzz.harness import FuzzBug, check_error

    with pytest.raises(FuzzBug, match="unlocated"):
        check_error(CimcError("no place"), ("p.cimasm",), "")
    with pytest.raises(FuzzBug, match="multi-line"):
        check_error(CimcError("a\nb", "p.cimasm:1:1"), ("p.cimasm",), "x\n")
    with pytest.raises(FuzzBug, match="position"):
        check_error(CimcError("m", "p.cimasm:9:1"), ("p.cimasm",), "x\n")
    check_error(CimcError("m", "p.cimasm:1:3"), ("p.cimasm",), "x\n")
    assert Path(work.root / "tiny.safetensors").is_file()


def test_oracle_counts_lines_as_the_reader_does(work: Workdir) -> None:
    """Files are read with universal newlines: a lone CR ends a line (atheris finding)."""
    text = ".arch tiny\r\r\r\r.core 0\n  frob\n"
    assert check_case(Case(text, "cr.cimasm"), work, random.Random(0)) == "load error"
