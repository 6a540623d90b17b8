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
    from cimc.verify import VerifyReport

NAME = "verify"
HELP = "compile a model and prove the program equals the integer golden bit for bit"
EPILOG = """\
example:
  cimc example gpt2-tiny -o models/
  cimc verify models/gpt2-tiny.onnx --arch tiny --seq-len 8
  cimc verify model.onnx --inputs inputs.npz --json > verify.json

On a mismatch, the first diverging graph value and the instruction that wrote it are
named. Inputs not in --inputs are generated from their meaning (token ids inside the
vocabulary, masks of ones) with --seed. Accuracy is the dequantized output against the
float model.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, NAME, HELP, EPILOG, EXIT_STATUS_CHECKED)
    add_model_options(p)
    p.add_argument("--inputs", metavar="FILE.npz", help="input arrays by name (np.savez)")
    p.add_argument("--seed", type=int, default=0, help="seed of generated inputs (default 0)")
    add_json_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cimc.reference.float_model import default_inputs
    from cimc.verify import verify_compiled

    if list_passes(args, args.model, "a model file"):
        return 0
    result, _ = compile_from_args(args)
    given = load_inputs(args.inputs)
    known = [n.name for n in result.float_graph.input_nodes()]
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise CimcError(f"unknown inputs {unknown}; the model takes {known}", args.inputs)
    inputs = {**default_inputs(result.float_graph, seed=args.seed), **given}
    report = verify_compiled(result.compiled, result.float_graph, inputs)
    if args.json:
        print_json(NAME, report.as_json())
    else:
        _print(report)
    return 0 if report.bit_exact else 1


def _print(report: VerifyReport) -> None:
    console = tables.console()
    table = Table(title="outputs: interpreter vs integer golden, and vs float")
    for column in ("output", "shape", "mismatched", "cosine vs float", "max |error|"):
        table.add_column(column, justify="left" if column == "output" else "right")
    for o in report.outputs:
        table.add_row(
            o.name,
            "x".join(map(str, o.shape)),
            str(o.mismatched),
            f"{o.cosine:.6f}",
            f"{o.max_abs_error:.4g}",
        )
    console.print(table)
    f = report.figures
    console.print(
        f"{f['instructions']} instructions on '{f['arch']}': {f['makespan_cycles']} cycles "
        f"(lower bound {f['lower_bound_cycles']}), {f['energy_uj']:.3f} uJ, macro utilization "
        f"{f['macro_cell_utilization']:.1%}, {f['weight_bytes_loaded']} weight bytes loaded"
    )
    if report.divergence is not None:
        console.print(f"MISMATCH: {report.divergence.message()}", markup=False)
    elif not report.bit_exact:
        console.print(f"MISMATCH: {report.mismatched_elements} output elements differ")
    else:
        console.print("bit-exact: every output equals the integer golden")
