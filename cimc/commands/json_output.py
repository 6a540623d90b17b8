"""`--json`: every command prints one JSON object, in one vocabulary.

The rules a key follows (tests/test_cli_json.py checks every command's output against
them; a new key, such as a report figure, must follow them too):

1. The object starts with `command` (the subcommand) and `cimc_version`.
2. Keys are snake_case ASCII: `[a-z][a-z0-9]*(_[a-z0-9]+)*`. The only exception are the
   maps in `DATA_MAPS`, keyed by names from the data (graph outputs, opcodes, programs,
   "src->dst" paths, node names); their values follow the rules again.
3. A quantity carries its unit as the last word: `_cycles` (a duration in cycles),
   `_cycle` (a point in time, in cycles from the program's start), `_bytes`, `_uj`, `_pj`,
   `_us`, `_mhz`, `_gbps`, `_mm2` (area), `_mw` (power), `_seconds` (wall-clock time of the
   compiler); `_per_cycle` is a rate (`tokens_per_cycle`: throughput). Without a unit a
   number is a count (`instructions`, `macs`, `mismatched_elements`) or a ratio
   (`_utilization`, `_ratio`, `cosine`, `quality`).
4. A figure has one name and one type in every command (`ALIASES` lists the names that
   are refused for what has another name):
   - `makespan_cycles`: cycles from the start to the last instruction's end (schedule
     simulation); `lower_bound_cycles`: the busiest unit or channel;
   - `energy_uj`: the total energy of one run, a number; `energy_breakdown_uj`: by kind;
   - `instructions`: instructions of the program; `macro_cell_utilization`: written cells
     over the cells of the macros used; `weight_bytes_loaded`: bytes written into macros
     from constants;
   - `arch`: the preset name; `program`: the program file; `bit_exact`: a boolean.
5. Infinite or undefined floats are `null` (JSON has no infinity).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping
from typing import Any

from cimc.version import __version__

# Objects keyed by names from the data, not by vocabulary words.
DATA_MAPS = frozenset(
    {
        "outputs",
        "opcode_counts",
        "bytes_moved",
        "opcodes",
        "cost",
        "params",
        "sensitivity",
        "copies",  # layer -> copies (--mapping duplicate)
        "core_groups",  # layer -> the cores of each copy
    }
)

# Refused spellings of figures that have one name (rule 4): alias -> the name to use.
ALIASES = {
    "cycles": "makespan_cycles",
    "macro_utilization": "macro_cell_utilization",
    "energy_total_uj": "energy_uj",
    "start": "start_cycle",
    "end": "end_cycle",
    "first_start": "first_start_cycle",
    "last_end": "last_end_cycle",
}


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (keys: cimc.commands.json_output)",
    )


def print_json(command: str, payload: Mapping[str, Any]) -> None:
    """Print `payload` as the command's one JSON object (rule 1 and 5 applied here)."""
    document = {"command": command, "cimc_version": __version__, **payload}
    print(json.dumps(finite(document), indent=2, allow_nan=False))


def finite(value: Any) -> Any:
    """Infinite and NaN floats become null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
