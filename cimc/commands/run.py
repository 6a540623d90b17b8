"""`cimc run`: execute an assembly program on the reference interpreter."""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from cimc.commands import add_command
from cimc.errors import CimcError
from cimc.machine.arch import Arch, load_arch
from cimc.machine.consts_file import check_consts_file
from cimc.machine.interpreter import run_program
from cimc.machine.parser import load_program
from cimc.machine.program import Program
from cimc.machine.validator import validate
from cimc.progress import add_quiet_option

NAME = "run"
HELP = "run an assembly program bit-exactly on the reference interpreter"
EPILOG = """\
example:
  cimc run isa/examples/matmul_2core.cimasm --inputs isa/examples/matmul_2core.inputs.npz \\
      -o y.npz --trace y.trace.json

The inputs file holds one array per `.input` of the program (np.savez); the outputs file
one array per `.output`. The trace opens in https://ui.perfetto.dev (one track per DMA
channel, NoC port, vector unit and macro of each core; flow arrows from each send to
its recv; counters of channel bandwidth and DMA transfers in flight).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, NAME, HELP, EPILOG)
    p.add_argument("program", metavar="PROGRAM.cimasm", help="assembly program")
    p.add_argument("--inputs", metavar="FILE.npz", help="input arrays by name (np.savez)")
    p.add_argument("-o", "--output", metavar="OUT.npz", help="write the outputs here")
    p.add_argument("--trace", metavar="FILE.json", help="write a Chrome/Perfetto trace")
    add_arch_option(p)
    add_quiet_option(p)
    p.set_defaults(handler=run)


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
    program = load_program(path)
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
    """Arrays of an .npz file (pickled objects refused: inputs are plain integer arrays)."""
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


def run(args: argparse.Namespace) -> int:
    check_output_path(args.output)
    check_output_path(args.trace)
    program, arch = load_program_and_arch(args.program, args.arch, check_consts=False)
    result = run_program(program, arch, load_inputs(args.inputs))
    if args.output:
        _save(args.output, result.outputs)
    if args.trace:
        from cimc.machine.schedule import simulate
        from cimc.machine.trace import write_trace

        write_trace(args.trace, simulate(program, arch), arch, Path(args.program).name)
    _print_outputs(result.outputs, result.stats.steps, arch.name)
    return 0


def _save(path: str, outputs: dict[str, np.ndarray]) -> None:
    try:
        with open(path, "wb") as f:
            np.savez(f, **outputs)  # type: ignore[arg-type]
    except OSError as e:
        raise CimcError(f"cannot write the outputs: {e.strerror or e}", path) from None


def _print_outputs(outputs: dict[str, np.ndarray], steps: int, arch: str) -> None:
    table = Table(title=f"outputs ({steps} instructions executed on '{arch}')")
    for column in ("output", "dtype", "shape", "min", "max", "first values"):
        table.add_column(
            column, justify="left" if column in ("output", "first values") else "right"
        )
    for name, value in outputs.items():
        flat = value.reshape(-1)
        first = " ".join(str(v) for v in flat[:8]) + (" ..." if flat.size > 8 else "")
        table.add_row(name, str(value.dtype), "x".join(map(str, value.shape)),
                      str(flat.min()), str(flat.max()), first)  # fmt: skip
    Console(width=120).print(table)
