"""`cimc inspect`: a compiled program by graph node and by macro (cycles, energy, tiles)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from cimc.commands import add_command, tables
from cimc.commands.json_output import add_json_option, print_json
from cimc.commands.program_files import add_arch_option, load_program_and_arch
from cimc.inspect.macros import ChipPhase, MacroPhase, chip_phases, macro_phases, parse_macro_spec
from cimc.inspect.nodes import NodeStats, find_node, node_listing, node_stats
from cimc.machine.arch import Arch
from cimc.machine.interpreter import instr_text
from cimc.machine.schedule import Schedule, Scheduled, simulate
from cimc.progress import add_quiet_option

NAME = "inspect"
HELP = "show a program by graph node (cycles, energy, opcodes) and by macro (weight tiles)"
EPILOG = """\
examples:
  cimc inspect bert.cimasm                      # one row per graph node
  cimc inspect bert.cimasm --node linear_1      # that node's assembly, timed
  cimc inspect bert.cimasm --macro 0.1          # tiles held by core 0's macro m1, per phase
  cimc inspect matmul_2core --json > nodes.json  # a bundled example program, by name

Nodes are the instructions' trailing comments (the compiler writes the graph node there).
Cycles and start times come from the schedule simulation of `cimc report`: "busy" sums
each instruction's unit time, "span" runs from the node's first start to its last end.
A macro's phase runs from one mload of it to the next; the chip map shows, for each
fill of the macros, which node's tile every macro holds and how full it is. A tile of
a weight-streamed program is named the same way (`linear_1.w[0:32, 0:32]`), with its
place in the streamed image (`via weights.img+6144`).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, NAME, HELP, EPILOG)
    p.add_argument("program", metavar="PROGRAM.cimasm", help="assembly program")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--node", metavar="NAME", help="list this node's instructions, timed")
    group.add_argument("--macro", metavar="CORE.MACRO", help="phases of one macro, e.g. 0.3")
    add_json_option(p)
    add_arch_option(p)
    add_quiet_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    program, arch = load_program_and_arch(args.program, args.arch)
    schedule = simulate(program, arch)
    console = tables.console()
    if args.node is not None:
        node = find_node(schedule, args.node)
        items = node_listing(schedule, node)
        _emit(args.json, console, lambda: _node_json(node, items), lambda: _node_text(node, items))
        return 0
    phases = macro_phases(program, schedule)
    if args.macro is not None:
        core, macro = parse_macro_spec(args.macro, program, arch)
        mine = tuple(p for p in phases if (p.core, p.macro) == (core, macro))
        _emit(
            args.json,
            console,
            lambda: {"core": core, "macro": macro, "phases": [p.as_dict() for p in mine]},
            lambda: _macro_text(core, macro, mine, arch),
        )
        return 0
    chips = chip_phases(phases, schedule.makespan)
    stats = node_stats(schedule)
    _emit(
        args.json,
        console,
        lambda: {"nodes": [s.as_dict() for s in stats], "chip_phases": _chip_json(chips, arch)},
        lambda: _overview_text(stats, chips, schedule, arch),
    )
    return 0


def _emit(
    as_json: bool,
    console: Console,
    data: Callable[[], dict[str, object]],
    text: Callable[[], list[object]],
) -> None:
    """Build only the form asked for (JSON or tables)."""
    if as_json:
        print_json(NAME, data())  # type: ignore[arg-type]
        return
    for block in text():
        console.print(block)


MAX_TEXT_PHASES = 64
_TEXT_COLUMNS = ("opcodes", "instruction", "unit", "window", "tile (source)", "node", "MVMs")


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, min_width=len(title) + 4)
    for i, column in enumerate(columns):
        left = i == 0 or column in _TEXT_COLUMNS
        table.add_column(column, justify="left" if left else "right")
    return table


def _mix(opcodes: dict[str, int], limit: int = 5) -> str:
    top = sorted(opcodes.items(), key=lambda kv: (-kv[1], kv[0]))
    text = " ".join(f"{op}:{n}" for op, n in top[:limit])
    return text + (" ..." if len(top) > limit else "")


def _overview_text(
    stats: tuple[NodeStats, ...], chips: tuple[ChipPhase, ...], schedule: Schedule, arch: Arch
) -> list[object]:
    title = f"{len(stats)} graph nodes on '{arch.name}' (makespan {schedule.makespan:,} cycles)"
    table = _table(
        title, "node", "instrs", "busy cycles", "span", "start", "energy nJ", "MACs", "opcodes"
    )
    for s in stats:
        table.add_row(
            s.name,
            f"{s.instructions:,}",
            f"{s.busy_cycles:,}",
            f"{s.span_cycles:,}",
            f"{s.first_start:,}",
            f"{s.energy_pj / 1e3:,.3f}",
            f"{s.macs:,}",
            _mix(s.opcodes),
        )
    return [table, *_chip_text(chips, arch)]


def _chip_text(chips: tuple[ChipPhase, ...], arch: Arch) -> list[object]:
    """Per chip phase, a cores x macros grid: a letter per node and the percent of cells."""
    if not chips:
        return ["no mload: the macros are never used"]
    letters: dict[str, str] = {}
    lines = [f"macro occupancy per chip phase ({len(chips)} phases; letter = node, % of cells)"]
    cores = sorted({c for ph in chips for c, _ in ph.live})
    for ph in chips[:MAX_TEXT_PHASES]:
        lines.append(f"phase {ph.index}: cycles {ph.start:,}..{ph.end:,}")
        for core in cores:
            cells = []
            for m in range(arch.core.macros):
                p = ph.live.get((core, m))
                if p is None:
                    cells.append("  .    ")
                    continue
                letter = letters.setdefault(p.node, _letter(len(letters)))
                mark = f"{letter:>2}:" if p.packed else f"{letter:>3}"
                cells.append(f"{mark}{100 * p.cells / arch.macro_bytes:3.0f}%")
            lines.append(f"  core {core:<3}|" + "".join(cells))
    if len(chips) > MAX_TEXT_PHASES:
        lines.append(f"... {len(chips) - MAX_TEXT_PHASES} more phases (all of them in --json)")
    lines.append("legend: " + "; ".join(f"{v} = {k or '(no comment)'}" for k, v in letters.items()))
    if any(p.packed for ph in chips for p in ph.live.values()):
        lines.append("X: = packed int4 weights, two a cell")
    return ["\n".join(lines)]


def _letter(i: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    return alphabet[i] if i < len(alphabet) else f"#{i}"


def _chip_json(chips: tuple[ChipPhase, ...], arch: Arch) -> list[dict[str, object]]:
    return [
        {
            "phase": ph.index,
            "start_cycle": ph.start,
            "end_cycle": ph.end,
            "macros": [
                {
                    "core": c,
                    "macro": m,
                    "node": p.node,
                    "tile": p.source.label,
                    "tile_via": p.source.via,
                    "fraction": p.cells / arch.macro_bytes,
                }
                for (c, m), p in ph.live.items()
            ],
        }
        for ph in chips
    ]


def _node_text(node: str, items: tuple[Scheduled, ...]) -> list[object]:
    energy = sum(i.cost.energy.total for i in items)
    title = f"{node}: {len(items)} instructions, {energy / 1e3:,.3f} nJ"
    table = _table(title, "core", "line", "instruction", "unit", "start", "cycles", "energy pJ")
    for i in items:
        table.add_row(
            str(i.core),
            str(i.instr.line),
            instr_text(i.instr),
            i.cost.unit,
            f"{i.start:,}",
            f"{i.end - i.start:,}",
            f"{i.cost.energy.total:,.1f}",
        )
    return [table]


def _node_json(node: str, items: tuple[Scheduled, ...]) -> dict[str, object]:
    return {
        "node": node,
        "instructions": [
            {
                "core": i.core,
                "line": i.instr.line,
                "instr": instr_text(i.instr),
                "unit": i.cost.unit,
                "start_cycle": i.start,
                "busy_cycles": i.end - i.start,
                "energy_pj": i.cost.energy.total,
            }
            for i in items
        ],
    }


def _macro_text(core: int, macro: int, phases: tuple[MacroPhase, ...], arch: Arch) -> list[object]:
    title = (
        f"core {core} macro m{macro}: {len(phases)} phases ({arch.macro.rows}x{arch.macro.cols})"
    )
    if not phases:
        return [f"{title}: never loaded"]
    table = _table(title, "phase", "cycles", "window", "tile (source)", "node", "full", "MVMs")
    for p in phases:
        r0, r1, c0, c1 = p.window
        tile = p.source.text + (" (transposed)" if p.transposed else "")
        mvms = ", ".join(f"line {u.line}" for u in p.uses[:4]) + (" ..." if len(p.uses) > 4 else "")
        table.add_row(
            str(p.index),
            f"{p.start:,}..{p.end:,}",
            f"[{r0}:{r1},{c0}:{c1}]",
            tile,
            p.node,
            f"{100 * p.cells / arch.macro_bytes:.0f}%",
            f"{len(p.uses)}: {mvms}" if p.uses else "0 (unused)",
        )
    return [table]
