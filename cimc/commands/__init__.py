"""Subcommands of the `cimc` CLI, one module each (see cimc/cli.py for the contract)."""

from __future__ import annotations

import argparse

EXIT_STATUS = (
    "exit status: 0 done, 2 bad input (one line on stderr: the place, then what to do),\n"
    "3 a cimc bug (one line; CIMC_TRACEBACK=1 shows the traceback), 130 interrupted"
)
EXIT_STATUS_CHECKED = (
    "exit status: 0 bit-exact, 1 a mismatch with the integer golden (named on stdout),\n"
    "2 bad input (one line on stderr: the place, then what to do), 3 a cimc bug (one line;\n"
    "CIMC_TRACEBACK=1 shows the traceback), 130 interrupted"
)


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    summary: str,
    epilog: str,
    exit_status: str = EXIT_STATUS,
) -> argparse.ArgumentParser:
    """A subcommand parser whose --help shows `summary`, the example-bearing `epilog` as
    written (line breaks kept) and the exit codes."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=f"{epilog.rstrip()}\n\n{exit_status}\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser
