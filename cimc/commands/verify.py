"""`cimc verify`: compile, run interpreter and integer golden, compare bit for bit."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rich.table import Table

from cimc.commands import EXIT_STATUS_CHECKED, add_command, tables
from cimc.commands.compile import add_model_options, compile_from_args
from cimc.commands.json_output import add_json_option, print_json
from cimc.commands.pass_options import list_passes
from cimc.commands.program_files import load_inputs
from cimc.errors import CimcError

if TYPE_CHECKING:
    import numpy as np

    from cimc.ir.graph import Graph
    from cimc.verify import VerifyReport

NAME = "verify"
HELP = "compile a model and prove the program equals the integer golden bit for bit"
EPILOG = """\
example:
  cimc example gpt2-tiny -o models/
  cimc verify models/gpt2-tiny.onnx --arch tiny --seq-len 8
  cimc verify model.onnx --inputs inputs.npz --json > verify.json
  cimc verify encoder.onnx --calibration calib.npz --inputs eval.npz --per-node --top 10

On a mismatch, the first diverging graph value and the instruction that wrote it are
named. Inputs not in --inputs are generated from their meaning (token ids inside the
vocabulary, masks of ones) with --seed. An --inputs file whose arrays carry one more
leading axis than the inputs holds several samples (as a --calibration file): each is
verified, accuracy is over all. Accuracy is the dequantized output against the float
model; for an encoder output [1, S, H] with an attention mask, also over real tokens and
as the mean-pooled embedding (worst sample). --per-node adds, per graph value, the cosine
and max error against float and the cosine lost against its inputs, worst first: where
accuracy goes.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, NAME, HELP, EPILOG, EXIT_STATUS_CHECKED)
    add_model_options(p)
    p.add_argument("--inputs", metavar="FILE.npz", help="input arrays by name (np.savez)")
    p.add_argument("--seed", type=int, default=0, help="seed of generated inputs (default 0)")
    add_json_option(p)
    p.add_argument(
        "--per-node",
        action="store_true",
        help="accuracy of every graph value against float, largest drop first",
    )
    p.add_argument(
        "--top", type=int, default=15, metavar="N", help="rows of --per-node shown (default 15)"
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cimc.verify import verify_samples

    if args.top < 1:
        raise CimcError(f"--top must be at least 1, got {args.top}", "--top")
    if list_passes(args, args.model, "a model file"):
        return 0
    result, _ = compile_from_args(args)
    samples = input_samples(result.float_graph, args.inputs, args.seed)
    report = verify_samples(result.compiled, result.float_graph, samples, per_node=args.per_node)
    if args.json:
        print_json(NAME, report.as_json())
    else:
        _print(report, args.top if args.per_node else 0)
    return 0 if report.bit_exact else 1


def input_samples(graph: Graph, path: str | None, seed: int) -> list[dict[str, np.ndarray]]:
    """One input set (arrays shaped as the inputs, the rest generated), or the samples of
    a file whose arrays have one more leading axis (checked as a calibration file)."""
    from cimc.quant.calibrate import load_calibration_file
    from cimc.reference.float_model import default_inputs

    given = load_inputs(path)
    known = {n.name: n.type for n in graph.input_nodes()}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise CimcError(f"unknown inputs {unknown}; the model takes {sorted(known)}", path)
    stacked = all(a.ndim == known[k].rank + 1 for k, a in given.items())
    if path is not None and given.keys() == known.keys() and stacked:
        return load_calibration_file(graph, path)
    return [{**default_inputs(graph, seed=seed), **given}]


def _print(report: VerifyReport, top: int) -> None:
    console = tables.console()
    title = "outputs: interpreter vs integer golden, and vs float"
    table = Table(title=f"{title} ({report.samples} samples)" if report.samples > 1 else title)
    columns = ["output", "shape", "mismatched", "cosine vs float", "max |error|"]
    view = any(o.pooled_cosine is not None for o in report.outputs)
    columns += ["real tokens", "pooled (worst)"] if view else []
    for column in columns:
        table.add_column(column, justify="left" if column == "output" else "right")
    for o in report.outputs:
        row = [
            o.name,
            "x".join(map(str, o.shape)),
            str(o.mismatched),
            f"{o.cosine:.6f}",
            f"{o.max_abs_error:.4g}",
        ]
        if view:
            row += [_figure(o.real_token_cosine), _figure(o.pooled_cosine)]
        table.add_row(*row)
    console.print(table)
    if top and report.nodes:
        console.print(node_table(report, top))
    f = report.figures
    console.print(
        f"{f['instructions']} instructions on '{f['arch']}': {f['makespan_cycles']} cycles "
        f"(lower bound {f['lower_bound_cycles']}), {f['energy_uj']:.3f} uJ, macro utilization "
        f"{f['macro_cell_utilization']:.1%}, {f['weight_bytes_loaded']} weight bytes loaded"
    )
    copied = f" ({len(f['copies'])} layers copied)" if f["copies"] else ""
    if f["stages"]:
        copied = f" ({len(f['stages'])} stages x {f['micro_batches']} micro-batches)"
    rate = f", {f['tokens_per_cycle']:.5f} tokens/cycle" if f["tokens_per_cycle"] else ""
    console.print(f"mapping {f['mapping']}{copied}{rate}")
    if report.divergence is not None:
        console.print(f"MISMATCH: {report.divergence.message()}", markup=False)
    elif not report.bit_exact:
        console.print(f"MISMATCH: {report.mismatched_elements} output elements differ")
    else:
        console.print("bit-exact: every output equals the integer golden")


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"


def node_table(report: VerifyReport, top: int) -> Table:
    """The --per-node rows: the `top` values that lose the most cosine against their inputs."""
    shown = report.nodes[:top]
    table = Table(title=f"where accuracy goes: {len(shown)} of {len(report.nodes)} values")
    table.add_column("value", overflow="fold")
    for column in ("op", "cosine", "drop", "own", "max |error|", "max |x|", "step"):
        table.add_column(column, justify="left" if column == "op" else "right")
    for v in shown:
        table.add_row(
            v.name,
            v.op,
            f"{v.cosine:.6f}",
            f"{v.drop:+.6f}",
            f"{v.own:.6f}",
            f"{v.max_abs_error:.4g}",
            f"{v.max_abs_ref:.4g}",
            f"{v.scale:.3g}",
        )
    return table
