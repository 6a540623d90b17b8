"""`cimc sweep`: design-space exploration of arch fields and compiler options (Optuna)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from rich.table import Table

from cimc.commands import EXIT_STATUS_CHECKED, add_command, tables
from cimc.commands.json_output import add_json_option, print_json
from cimc.errors import CimcError
from cimc.progress import add_quiet_option

NAME = "sweep"
HELP = "explore arch fields and compiler options: latency, energy and area of every trial"
EPILOG = """\
example:
  cimc sweep examples/models/tiny_encoder.onnx --space examples/sweep_space.toml -o sw --workers 2
  cimc sweep model.onnx --space space.toml -o sweep/ --ray local --objectives latency,energy
  cimc sweep model.onnx --space space.toml -o sweep/ --storage postgresql://host/db --verify

SPACE.toml names a base arch and the knobs (any arch field by its dotted name, e.g.
"core.macros" = [8, 16, 32] or {low = 3.2, high = 25.6, log = true}; compile.seq_len,
compile.streaming); see examples/sweep_space.toml. Every trial compiles the model for its
arch and costs the program (--verify: also runs it against the integer golden). The Optuna
study is stored in DIR/study.db (or --storage): a rerun resumes it and runs only the
trials missing to reach --trials (default: the whole grid when every knob is a list, else
50). A small finite grid is swept by GridSampler, anything else by NSGA-II (seeded).
A trial whose arch is invalid or that does not compile is recorded as failed, with its
one-line reason, and the sweep goes on.
--ray ADDRESS joins a running cluster (the HOST:PORT `ray start --head` printed; Ray's own
settings apply: a cluster with token authentication wants RAY_AUTH_MODE=token here): every
node must import this same cimc (checked by one task first) and read MODEL at the same path.
Writes DIR/trials.csv (one row per trial), DIR/pareto.png (latency x energy, colour =
area), DIR/sensitivity.png and DIR/knobs.png (how much each knob moves each objective).
"""
OBJECTIVE_NAMES = ("latency", "energy", "area")
EXIT_STATUS = EXIT_STATUS_CHECKED.replace("0 bit-exact", "0 done (--verify: all bit-exact)")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, NAME, HELP, EPILOG, EXIT_STATUS)
    p.add_argument("model", metavar="MODEL", help="model file: .onnx or .pt2 (torch.export)")
    p.add_argument("--space", required=True, metavar="SPACE.toml", help="the knobs to sweep")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the results")
    p.add_argument(
        "--trials",
        type=_positive,
        metavar="N",
        help="trials the study should hold (default: the grid's size, or 50)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=_positive,
        metavar="W",
        help="run W trials at once in local processes (default 1: in this one)",
    )
    where.add_argument(
        "--ray",
        metavar="local|ADDRESS",
        help="each trial a Ray task: 'local' starts a cluster, else join ADDRESS",
    )
    p.add_argument(
        "--storage",
        metavar="URL",
        help="SQLAlchemy URL of the Optuna storage (default: sqlite:///DIR/study.db)",
    )
    p.add_argument(
        "--objectives",
        default="latency,energy,area",
        metavar="LIST",
        help="comma-separated, minimized: latency, energy, area (default: all three)",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="run every trial's program against the integer golden (bit_exact column)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    add_json_option(p)
    add_quiet_option(p)
    p.set_defaults(handler=run)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a count >= 1, got {text!r}")
    return int(text)


def _objectives(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in OBJECTIVE_NAMES]
    if not names or bad or len(set(names)) != len(names):
        raise CimcError(
            f"bad objectives {text!r}; write a comma-separated subset of "
            f"{','.join(OBJECTIVE_NAMES)}, each once",
            "--objectives",
        )
    return names


def run(args: argparse.Namespace) -> int:
    from cimc.sweep.space import load_space

    objectives = _objectives(args.objectives)
    if not Path(args.model).is_file():
        raise CimcError("model file not found", args.model)
    space = load_space(args.space)
    _require("optuna")
    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CimcError(f"cannot create the output folder: {e.strerror or e}", str(out)) from None
    storage = args.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    return _sweep(args, space, objectives, storage, out)


def _require(module: str) -> None:
    try:
        __import__(module)
    except ModuleNotFoundError:
        raise CimcError(
            f"needs the optional package '{module}': pip install 'cimc[sweep]'", "cimc sweep"
        ) from None


def _sweep(
    args: argparse.Namespace, space: Any, objectives: tuple[str, ...], storage: str, out: Path
) -> int:
    from cimc.sweep.executors import make_executor
    from cimc.sweep.outputs import most_sensitive, pareto_front, sensitivity, study_rows, write_csv
    from cimc.sweep.plots import write_sweep_plots
    from cimc.sweep.study import SweepConfig, open_study, run_sweep

    config = SweepConfig(
        args.model, space, objectives, args.trials, storage, args.verify, args.seed
    )
    quiet = args.quiet or args.json
    started = time.perf_counter()
    opened = open_study(config)  # a study of another sweep is refused before any work
    executor = make_executor(args.workers, args.ray)  # an unreachable cluster, likewise
    if space.calibration is None and not args.quiet:
        print("cimc: no calibration file in the space ([compile] calibration = FILE.npz): "
              "every trial calibrates on the same generated inputs", file=sys.stderr)  # fmt: skip
    try:
        if not quiet:
            print(f"cimc sweep: trials on {executor.name}", file=sys.stderr)
        result = run_sweep(config, executor, _silent if quiet else _progress, opened)
    finally:
        executor.close()
    wall = time.perf_counter() - started
    knobs = [k.name for k in space.knobs]
    rows = study_rows(result.study, knobs)
    table = sensitivity(rows, knobs, objectives)
    csv_path = write_csv(rows, knobs, out / "trials.csv")
    plots = write_sweep_plots(rows, knobs, objectives, table, out, Path(args.model).name)
    front = pareto_front(rows, objectives)
    summary: dict[str, Any] = {
        "model": args.model,
        "space": args.space,
        "storage": storage,
        "sampler": result.sampler,
        "executor": executor.name,
        "objectives": list(objectives),
        "trials": len(rows),
        "completed": sum(r.ok for r in rows),
        "failed": sum(not r.ok for r in rows),
        "ran": len(result.ran),
        "wall_seconds": round(wall, 3),
        "csv": str(csv_path),
        "plots": [str(p) for p in plots],
        "pareto": [_point(r) for r in front],
        "sensitivity": {k: {o: table[o][k] for o in objectives} for k in knobs},
        "most_sensitive": [
            {"objective": o, "knob": k, "share": table[o][k] if k else 0.0}
            for o, k in most_sensitive(table).items()
        ],
        "failures": [{"trial": r.number, "error": r.error} for r in rows if not r.ok],
    }
    mismatched = [r.number for r in rows if r.ok and r.bit_exact is False]
    if args.verify:
        summary["bit_exact"] = not mismatched
    if args.json:
        print_json(NAME, summary)
    else:
        _print(summary, knobs, objectives, mismatched)
    return 1 if mismatched else 0


def _point(row: Any) -> dict[str, Any]:
    m = row.metrics
    point = {"trial": row.number, "params": dict(row.params)}
    for key in ("makespan_cycles", "latency_us", "energy_uj", "area_mm2"):
        point[key] = m[key]
    return point


def _silent(result: Any, done: int, total: int) -> None:
    pass


def _progress(result: Any, done: int, total: int) -> None:
    knobs = ", ".join(f"{k}={v}" for k, v in result.params.items())
    head = f"[{done}/{total}] trial {result.number} ({knobs})"
    if not result.ok:
        print(f"{head}: failed: {result.error}", file=sys.stderr)
        return
    m = result.metrics
    exact = (
        ""
        if result.bit_exact is None
        else (", bit-exact" if result.bit_exact else ", NOT bit-exact")
    )
    print(
        f"{head}: {m['makespan_cycles']:,} cycles = {m['latency_us']:,.2f} us, "
        f"{m['energy_uj']:,.3f} uJ, {m['area_mm2']:,.3f} mm2{exact} ({result.seconds:.1f} s)",
        file=sys.stderr,
    )


def _print(
    s: dict[str, Any], knobs: list[str], objectives: tuple[str, ...], mismatched: list[int]
) -> None:
    console = tables.console()
    title = (
        f"Pareto front of {s['completed']} completed trials ({s['failed']} failed, "
        f"{s['ran']} run now, {s['sampler']})"
    )
    front = Table(title=title, min_width=len(title) + 4)
    for column in ("trial", *knobs, "cycles", "latency us", "energy uJ", "area mm2"):
        front.add_column(column, justify="left" if column in knobs else "right")
    for p in s["pareto"]:
        front.add_row(
            str(p["trial"]),
            *(str(p["params"][k]) for k in knobs),
            f"{p['makespan_cycles']:,}",
            f"{p['latency_us']:,.2f}",
            f"{p['energy_uj']:,.3f}",
            f"{p['area_mm2']:,.3f}",
        )
    console.print(front)
    sens = Table(title="sensitivity: share of each objective's variance a knob explains (eta^2)")
    sens.add_column("knob")
    for o in objectives:
        sens.add_column(o, justify="right")
    for k in knobs:
        sens.add_row(k, *(f"{s['sensitivity'][k][o]:.2f}" for o in objectives))
    console.print(sens)
    matters = [f"{m['objective']}: {m['knob']} ({m['share']:.2f})" for m in s["most_sensitive"]]
    console.print("knob that matters most: " + ", ".join(matters), markup=False, highlight=False)
    for f in s["failures"][:10]:
        console.print(f"trial {f['trial']} failed: {f['error']}", markup=False, highlight=False)
    if len(s["failures"]) > 10:
        console.print(f"... and {len(s['failures']) - 10} more failures (see {s['csv']})")
    if mismatched:
        console.print(f"MISMATCH: trials {mismatched} are not bit-exact", markup=False)
    console.print(
        f"wrote {s['csv']}, {', '.join(s['plots'])}; study in {s['storage']}; "
        f"{s['wall_seconds']:.1f} s on {s['executor']}",
        markup=False,
        highlight=False,
    )
