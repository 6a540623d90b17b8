"""Coverage-guided fuzzing of the machine layer with atheris (optional: `pip install atheris`).

Each input is a program text, checked by the same oracle as the hypothesis fuzzer
(tests/fuzz/harness.py); a `FuzzBug` stops libFuzzer with the input saved as crash-*.
Seeds are the shipped examples. Run from the repo root, e.g.:

    python tests/fuzz/atheris_asm.py -runs=20000 -max_len=4096
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["cimc"]):
    from tests.fuzz.harness import Case, Workdir, check_case

_WORK = Workdir(Path(tempfile.mkdtemp(prefix="cimc-atheris-")))
_RNG = random.Random(0)


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    check_case(Case(text, "fuzz.cimasm", report_twice=0.0), _WORK, _RNG)


def main() -> None:
    seeds = Path(tempfile.mkdtemp(prefix="cimc-atheris-seeds-"))
    for name, text in Workdir.seeds():
        (seeds / name).write_text(text)
    atheris.Setup([*sys.argv, str(seeds)], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
