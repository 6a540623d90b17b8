"""`cimc report`: cycles, energy, utilization and traffic of a program from the cost model."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cimc.commands import add_command, tables
from cimc.commands.json_output import add_json_option, print_json
from cimc.commands.program_files import add_arch_option, check_output_path, load_program_and_arch
from cimc.inspect.mapping import program_mapping, program_tokens
from cimc.machine.schedule import simulate
from cimc.machine.summary import CostSummary, summarize
from cimc.machine.trace import write_trace
from cimc.progress import add_quiet_option

NAME = "report"
HELP = "estimate cycles, energy and utilization of a program (schedule simulation)"
EPILOG = """\
example:
  cimc report double_buffer                     # a bundled example program, by name
  cimc report matmul_2core --json > report.json
  cimc report matmul_2core --trace schedule.json   # ui.perfetto.dev
  cimc report matmul_2core --plot plots/   # occupancy, layers, roofline

Cycles come from a schedule simulation (in-order issue per core, unit availability,
address dependences, shared DRAM/flash/global-buffer channels, send/recv and barriers);
energy from per-instruction costs of the arch preset plus its [leakage] power over the
makespan; area from its [area] section (on chip: macros, SRAM, vector units, routers). The
lower bound is the busiest unit or channel (or one issue cycle per instruction); quality =
makespan / lower bound.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, NAME, HELP, EPILOG)
    p.add_argument("program", metavar="PROGRAM.cimasm", help="assembly program")
    add_json_option(p)
    p.add_argument("--trace", metavar="FILE.json", help="write the schedule as a Perfetto trace")
    p.add_argument(
        "--plot", metavar="DIR", help="write the occupancy, layers and roofline figures here"
    )
    p.add_argument(
        "--plot-format", choices=("png", "svg", "pdf"), default="png", help="(default: png)"
    )
    p.add_argument("--layers", type=_count, default=15, metavar="N",
                   help="show the N most energy-hungry source locations (default 15)")  # fmt: skip
    add_arch_option(p)
    add_quiet_option(p)
    p.set_defaults(handler=run)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a count >= 0, got {text!r}")
    return int(text)


def run(args: argparse.Namespace) -> int:
    check_output_path(args.trace)
    program, arch = load_program_and_arch(args.program, args.arch)
    schedule = simulate(program, arch)
    summary = summarize(program, arch, schedule)
    if args.trace:
        write_trace(args.trace, schedule, arch, Path(args.program).name)
    if args.plot:
        from cimc.plots import write_plots  # matplotlib is slow to import: only when asked

        for path in write_plots(program, arch, schedule, args.plot, args.plot_format):
            print(f"wrote {path}", file=sys.stderr)
    mapping = program_mapping(program).figures(summary.makespan_cycles, program_tokens(program))
    if args.json:
        print_json(NAME, {**summary.as_dict(), **mapping})
    else:
        print_summary(summary, tables.console(), args.layers, mapping)
    return 0


def _table(title: str, *columns: str) -> Table:
    """A table whose title never wraps; the first column is left-aligned, others right."""
    table = Table(title=title, min_width=len(title) + 4)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    return table


def print_summary(
    s: CostSummary, console: Console, layers: int = 15, mapping: dict[str, Any] | None = None
) -> None:
    head = _table(
        f"{s.program} on '{s.arch}' ({s.cores} cores, {s.clock_mhz:g} MHz)", "figure", "value"
    )
    head.add_row("makespan", f"{s.makespan_cycles:,} cycles = {s.time_us:,.3f} us")
    head.add_row("lower bound", f"{s.lower_bound_cycles:,} cycles ({s.lower_bound_reason})")
    head.add_row("schedule quality", f"{s.schedule_quality:.2f}x the lower bound")
    head.add_row(
        "energy",
        f"{s.energy_uj:,.4f} uJ = {s.dynamic_energy_uj:,.4f} dynamic + "
        f"{s.leakage_energy_uj:,.4f} leakage ({s.leakage_mw:,.3f} mW)",
    )
    head.add_row("area", f"{s.area_mm2:,.3f} mm2 ({_parts(s.area_breakdown_mm2)})")
    head.add_row("MACs", f"{s.macs:,} ({s.tops:.3f} TOPS effective)")
    head.add_row(
        "macros used", f"{s.macros_used} ({100 * s.macro_cell_utilization:.1f}% of their cells)"
    )
    if mapping is not None:
        _mapping_rows(head, mapping, s.makespan_cycles)
    console.print(head)
    energy = _table("energy breakdown", "kind", "uJ", "share")
    for kind, uj in s.energy_breakdown_uj.items():
        share = uj / s.energy_uj if s.energy_uj else 0.0
        energy.add_row(kind, f"{uj:.4f}", f"{100 * share:.1f}%")
    console.print(energy)
    _print_levels(s, console)
    _print_units(s, console)
    _print_counts(s, console)
    _print_layers(s, console, layers)


def _mapping_rows(head: Table, m: dict[str, Any], makespan_cycles: int) -> None:
    """Which mapping ran (inspect/mapping.py), its copies, latency vs throughput."""
    copies, stages = m["copies"], m["stages"]
    what = "spread (each layer once)"
    if copies:
        what = f"duplicate: {len(copies)} layers, {sum(copies.values())} copies"
    if stages:
        what = f"pipeline: {len(stages)} stages, {m['micro_batches']} micro-batches"
    head.add_row("mapping", what)
    for layer, groups in m["core_groups"].items():
        head.add_row(f"  %{layer}", " | ".join(",".join(map(str, g)) for g in groups))
    for k, stage in enumerate(stages):
        cores = ",".join(map(str, stage["cores"]))
        head.add_row(f"  stage {k}", f"cores {cores}: %{stage['first']} .. %{stage['last']}")
    if m["tokens_per_cycle"] is not None:
        head.add_row(
            "throughput",
            f"{m['run_tokens']:,} tokens in {makespan_cycles:,} cycles = "
            f"{m['tokens_per_cycle']:.5f} tokens/cycle",
        )


def _parts(breakdown: dict[str, float]) -> str:
    return ", ".join(f"{part} {value:,.3f}" for part, value in breakdown.items())


def _print_levels(s: CostSummary, console: Console) -> None:
    title = "memory levels (footprint: bytes the program places there, for the whole run)"
    table = _table(title, "level", "read", "written", "footprint", "capacity", "bound", "ratio")
    for m in s.memory_levels:
        ratio = f"{s.makespan_cycles / m.bound_cycles:.2f}x" if m.bound_cycles else "-"
        table.add_row(m.level, f"{m.read_bytes:,}", f"{m.written_bytes:,}",
                      f"{m.footprint_bytes:,}", f"{m.capacity_bytes:,}",
                      f"{m.bound_cycles:,} cycles", ratio)  # fmt: skip
    console.print(table)


def _print_units(s: CostSummary, console: Console) -> None:
    units = _table("unit utilization", "unit", "busy cycles", "utilization")
    for u in s.units:
        units.add_row(u.name, f"{u.busy_cycles:,}", f"{100 * u.utilization:.1f}%")
    console.print(units)


def _print_counts(s: CostSummary, console: Console) -> None:
    counts = _table("instructions by opcode", "opcode", "count")
    for opcode, n in s.opcode_counts.items():
        counts.add_row(opcode, f"{n:,}")
    console.print(counts)
    moved = _table("bytes moved", "path", "bytes")
    for path, n in s.bytes_moved.items():
        moved.add_row(path, f"{n:,}")
    console.print(moved)


def _print_layers(s: CostSummary, console: Console, limit: int) -> None:
    rows = sorted(s.layers, key=lambda layer: -layer.energy_uj)[:limit]
    title = f"source locations (top {len(rows)} of {len(s.layers)} by energy)"
    table = _table(title, "source", "instrs", "MACs", "off-chip bytes", "ops/byte", "uJ")
    for layer in rows:
        intensity = (
            "-" if math.isinf(layer.arithmetic_intensity) else f"{layer.arithmetic_intensity:.1f}"
        )
        table.add_row(layer.name, f"{layer.instructions:,}", f"{layer.macs:,}",
                      f"{layer.offchip_bytes:,}", intensity, f"{layer.energy_uj:.4f}")  # fmt: skip
    console.print(table)
