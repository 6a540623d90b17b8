"""The `cimc` command: one subcommand per module in cimc/commands/.

Each command module defines `NAME`, `register(subparsers)` (adds its parser, with help text
and an example) and `run(args) -> int`. A `CimcError` ends the command with one line,
`location: message`, on stderr and its exit code (2 for bad input, 1 for a verification
mismatch); never a traceback for bad input.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from cimc.errors import CimcError, InternalError
from cimc.extras import missing_extra
from cimc.progress import display
from cimc.version import __version__

# Subcommand modules under cimc.commands, in the order `cimc --help` lists them.
COMMANDS: tuple[str, ...] = (
    "example",
    "compile",
    "opt",
    "verify",
    "generate",
    "run",
    "report",
    "inspect",
    "sweep",
)

DESCRIPTION = """\
cimc compiles transformer models to a digital SRAM compute-in-memory accelerator and runs
the generated assembly bit-exactly.

examples:
  cimc run matmul_2core --inputs matmul_2core      # a bundled example program, by name
  cimc report double_buffer
"""


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line on stderr, exit 2, like every other cimc error (the
    subcommand parsers inherit this class through add_subparsers)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


class _Completion(argparse.Action):
    """Print the completion script of the whole parser and exit (as --version does)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        from cimc.completion import bash_script

        full = build_parser()  # with every subcommand registered
        parser.exit(0, bash_script(full))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cimc",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cimc {__version__}")
    parser.add_argument(
        "--completion",
        choices=["bash"],
        action=_Completion,
        help='print a shell completion script: eval "$(cimc --completion bash)"',
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"cimc.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with display(quiet=getattr(args, "quiet", False)):  # a bar only on a terminal
            return int(args.handler(args) or 0)
    except (CimcError, InternalError) as e:
        print(f"{e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("cimc: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: one line for the user, the traceback on request
        if os.environ.get("CIMC_TRACEBACK"):
            raise
        missing = _missing_extra(e, args)
        if missing is not None:  # an optional dependency: name the extra to install
            print(f"{missing}", file=sys.stderr)
            return missing.exit_code
        detail = f"{type(e).__name__}: {e} (at {_innermost_frame(e)})"
        print(
            f"{InternalError(detail)}; rerun with CIMC_TRACEBACK=1 for the traceback",
            file=sys.stderr,
        )
        return InternalError.exit_code


def _missing_extra(error: Exception, args: argparse.Namespace) -> CimcError | None:
    if not isinstance(error, ModuleNotFoundError):
        return None
    return missing_extra(error, str(getattr(args, "command", "")))


def _innermost_frame(error: BaseException) -> str:
    """`file:line` of the deepest frame inside cimc, so a bug report points somewhere."""
    package = os.path.dirname(os.path.abspath(__file__))
    tb, where = error.__traceback__, "unknown place"
    while tb is not None:
        frame = tb.tb_frame.f_code
        if os.path.abspath(frame.co_filename).startswith(package):
            where = f"{os.path.basename(frame.co_filename)}:{tb.tb_lineno} in {frame.co_name}"
        tb = tb.tb_next
    return where


if __name__ == "__main__":
    sys.exit(main())
