"""The pass manager's switches, shared by `cimc compile`, `cimc verify` and `cimc opt`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cimc.errors import CimcError


def add_pass_debug_options(p: argparse.ArgumentParser) -> None:
    """The pass manager's switches, as MLIR's tools spell them."""
    p.add_argument("--list-passes", action="store_true", help="list every pass and exit")
    p.add_argument("--print-ir-after-all", action="store_true", help="print the IR after each pass")
    for when in ("after", "before"):
        p.add_argument(
            f"--print-ir-{when}",
            action="append",
            default=[],
            metavar="PASS",
            help=f"print the IR {when} this pass or composite (repeatable)",
        )
    p.add_argument(
        "--print-ir-after-change",
        action="store_true",
        help="print the IR after a pass only if it changed it (alone: after every such pass)",
    )
    p.add_argument(
        "--time-passes", action="store_true", help="print the time of import and of each pass"
    )
    p.add_argument(
        "--validate-each",
        action="store_true",
        help="run the machine's validator after every program pass (default: after the last)",
    )


def list_passes(args: argparse.Namespace, given: str | None, what: str) -> bool:
    """Print the pass list when asked (then the command is done); else `what` must have
    been `given`."""
    if args.list_passes:
        from cimc.passes.manager import describe_passes

        sys.stdout.write(describe_passes())
        return True
    if given is None:
        raise CimcError(f"{what} is required (or --list-passes)", "arguments")
    return False


def manager_switches(args: argparse.Namespace) -> dict[str, Any]:
    """The PassManager keyword arguments the switches ask for."""
    return {
        "print_ir_after_all": args.print_ir_after_all,
        "print_ir_after": tuple(args.print_ir_after),
        "print_ir_before": tuple(args.print_ir_before),
        "print_ir_after_change": args.print_ir_after_change,
        "time_passes": args.time_passes,
        "deep_verify_each": args.validate_each,
    }
