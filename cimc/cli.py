"""The `cimc` command: one subcommand per module in cimc/commands/.

Each command module defines `NAME`, `register(subparsers)` (adds its parser, with help text
and an example) and `run(args) -> int`. A `CimcError` ends the command with one line,
`location: message`, on stderr and its exit code (2 for bad input, 1 for a verification
mismatch); never a traceback for bad input.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from cimc import __version__
from cimc.errors import CimcError

# Subcommand modules under cimc.commands, in the order `cimc --help` lists them.
COMMANDS: tuple[str, ...] = ("example", "compile", "verify", "run", "report", "inspect")

DESCRIPTION = """\
cimc compiles transformer models to a digital SRAM compute-in-memory accelerator and runs
the generated assembly bit-exactly.

examples:
  cimc run isa/examples/matmul_2core.cimasm --inputs isa/examples/matmul_2core.inputs.npz
  cimc report isa/examples/double_buffer.cimasm
"""


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line on stderr, exit 2, like every other cimc error (the
    subcommand parsers inherit this class through add_subparsers)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cimc",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cimc {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"cimc.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except CimcError as e:
        print(f"{e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("cimc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
