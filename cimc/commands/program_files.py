"""What the program-reading commands (run, report, inspect) share: finding the program
(a file, or a bundled example by name), its arch, its inputs, where outputs go."""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import numpy as np

from cimc.errors import CimcError
from cimc.machine.arch import Arch, load_arch
from cimc.machine.consts_file import check_consts_file
from cimc.machine.parser import load_program
from cimc.machine.program import Program
from cimc.machine.validator import validate
from cimc.resources import isa_dir


def bundled_examples() -> list[str]:
    """Names of the example programs shipped with cimc (isa/examples, in the wheel too)."""
    return sorted(p.stem for p in (isa_dir() / "examples").glob("*.cimasm"))


def resolve_program(path: str) -> str:
    """`path` itself, or, when no such file exists and it names a bundled example
    (`matmul_2core`), that example's file: help examples work from an installed wheel."""
    if Path(path).exists() or path not in bundled_examples():
        return path
    return str(isa_dir() / "examples" / f"{path}.cimasm")


def resolve_inputs(path: str | None) -> str | None:
    """An inputs file, or a bundled example's inputs by the example's name."""
    if path is None or Path(path).exists() or path not in bundled_examples():
        return path
    return str(isa_dir() / "examples" / f"{path}.inputs.npz")


def add_arch_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--arch",
        metavar="PRESET|FILE.toml",
        help="architecture (default: the program's .arch line)",
    )


def load_program_and_arch(
    path: str, arch_option: str | None, check_consts: bool = True
) -> tuple[Program, Arch]:
    """The parsed and validated program and the arch it runs on; with `check_consts`, a
    constants file beside it must be the one it was compiled with (`cimc run` leaves that
    to the interpreter, which hashes the file as it loads it).

    `--arch` (a preset name or a TOML file) replaces the program's `.arch` line; the
    validator still requires the arch's name to match, so a TOML file is the way to try
    other figures (clock, bandwidths, energies) on the same program.
    """
    program = load_program(resolve_program(path))
    try:
        arch = load_arch(arch_option or program.arch_name)
    except CimcError as e:
        if e.location is None:  # a preset name: point at where it came from
            raise CimcError(e.message, "--arch" if arch_option else f"{path}:1:1") from None
        raise
    validate(program, arch)
    if check_consts:
        check_consts_file(program)
    return program, arch


def load_inputs(path: str | None) -> dict[str, np.ndarray]:
    """Arrays of an .npz file (pickled objects refused: inputs are plain arrays), or of a
    bundled example's inputs by its name."""
    path = resolve_inputs(path)
    if path is None:
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise CimcError("inputs file not found", path) from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise CimcError(
            f"cannot read the inputs (an .npz of arrays is expected): {e}", path
        ) from None


def check_output_path(path: str | None) -> None:
    """Refuse an output file in a missing folder before any work is done."""
    if path is not None and not Path(path).resolve().parent.is_dir():
        raise CimcError("cannot write here: the folder does not exist", path)
