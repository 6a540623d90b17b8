"""Subcommands of the `cimc` CLI, one module each (see cimc/cli.py for the contract)."""

from __future__ import annotations

import argparse


def add_command(
    subparsers: argparse._SubParsersAction, name: str, summary: str, epilog: str
) -> argparse.ArgumentParser:
    """A subcommand parser whose --help shows `summary` and the example-bearing `epilog` as
    written (line breaks kept)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser
