"""`cimc run`: execute an assembly program on the reference interpreter."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cimc.commands import add_command
from cimc.commands.json_output import add_json_option, print_json
from cimc.commands.program_files import (
    add_arch_option,
    check_output_path,
    load_inputs,
    load_program_and_arch,
)
from cimc.commands.tables import console, number, table
from cimc.errors import CimcError
from cimc.machine.arch import Arch
from cimc.machine.consts_file import load_consts_and_metadata
from cimc.machine.interpreter import RunResult, run_program
from cimc.machine.program import Program, dtype_range
from cimc.machine.state import NP_DTYPES
from cimc.progress import add_quiet_option

if TYPE_CHECKING:
    from cimc.backend.builder.saved import Bindings

NAME = "run"
HELP = "run an assembly program bit-exactly on the reference interpreter"
EPILOG = """\
examples:
  cimc run matmul_2core --inputs matmul_2core -o y.npz --trace y.trace.json   # bundled
  cimc run bert.cimasm --seed 1                  # a compiled model, generated inputs
  cimc run bert.cimasm --inputs x.npz --codes    # the program's own integer codes

A program compiled by cimc runs on the graph's inputs (float values, token ids; --inputs
FILE.npz by graph input name, or drawn with --seed N as `cimc verify` draws them) and
prints its outputs dequantized (code x scale) in the graph's shapes; --codes runs on and
prints the machine's integer codes instead (`.input` / `.output` arrays, as for any
hand-written program, whose inputs --seed draws from [-128, 127]). -o writes what is
printed. The trace opens in https://ui.perfetto.dev (one track per DMA channel, NoC port,
vector unit and macro of each core; flow arrows from each send to its recv; counters of
channel bandwidth and DMA transfers in flight). Bundled example programs (matmul_2core,
double_buffer, layernorm, softmax_rows) are found by name, their inputs too.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, NAME, HELP, EPILOG)
    p.add_argument("program", metavar="PROGRAM.cimasm", help="assembly program (or example)")
    p.add_argument("--inputs", metavar="FILE.npz", help="input arrays by name (np.savez)")
    p.add_argument(
        "--seed", type=int, metavar="N", help="draw the inputs not in --inputs with this seed"
    )
    p.add_argument(
        "--codes", action="store_true", help="integer codes in and out, not graph values"
    )
    p.add_argument("-o", "--output", metavar="OUT.npz", help="write the outputs here")
    p.add_argument("--trace", metavar="FILE.json", help="write a Chrome/Perfetto trace")
    add_arch_option(p)
    add_quiet_option(p)
    add_json_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    check_output_path(args.output)
    check_output_path(args.trace)
    program, arch = load_program_and_arch(args.program, args.arch, check_consts=False)
    consts, metadata = load_consts_and_metadata(program)
    bindings = None if args.codes else _bindings(metadata, program)
    given = load_inputs(args.inputs)
    if bindings is None:
        seeded = seeded_codes(program, args.seed) if args.seed is not None else {}
        feeds = {**seeded, **given}
        result = run_program(program, arch, feeds, consts)
        outputs = result.outputs
    else:
        outputs, result = _run_graph(program, arch, consts, bindings, given, args.seed)
    if args.output:
        _save(args.output, outputs)
    if args.trace:
        from cimc.machine.schedule import simulate
        from cimc.machine.trace import write_trace

        write_trace(args.trace, simulate(program, arch), arch, Path(program.source_name).name)
    steps, dequantized = result.stats.steps, bindings is not None
    if args.json:
        print_json(NAME, _json(program, arch, outputs, steps, dequantized))
    else:
        _print_outputs(outputs, steps, arch.name, dequantized)
    return 0


def _bindings(metadata: dict[str, str], program: Program) -> Bindings | None:
    from cimc.backend.builder.saved import bindings_of

    return bindings_of(metadata, program.source_name)


def _run_graph(
    program: Program,
    arch: Arch,
    consts: dict[str, np.ndarray],
    bindings: Bindings,
    given: dict[str, np.ndarray],
    seed: int | None,
) -> tuple[dict[str, np.ndarray], RunResult]:
    """Graph inputs quantized, the program run, its outputs dequantized in graph shapes."""
    from cimc.backend.builder.compiled import bound_inputs, bound_outputs

    known = [g.name for g in bindings.graph_inputs]
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise CimcError(
            f"unknown inputs {unknown}; the model takes {known} (--codes: the program's)",
            "--inputs",
        )
    inputs: dict[str, np.ndarray] = {}
    if seed is not None:
        rng = np.random.default_rng(seed)
        inputs = {g.name: g.generate(rng) for g in bindings.graph_inputs}  # verify's draws
    feeds = bound_inputs(bindings.inputs, {**inputs, **given})
    result = run_program(program, arch, feeds, consts)
    codes = bound_outputs(bindings.outputs, result.outputs)
    return bindings.dequantized(codes), result


def seeded_codes(program: Program, seed: int) -> dict[str, np.ndarray]:
    """Every `.input` drawn uniformly from [-128, 127] (clipped to its dtype)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for decl in program.decls_of("input"):
        assert decl.dtype is not None
        lo, hi = dtype_range(decl.dtype)
        shape = (decl.rows, decl.cols)
        values = rng.integers(max(lo, -128), min(hi, 127) + 1, size=shape)
        feeds[decl.name] = values.astype(NP_DTYPES[decl.dtype])
    return feeds


def _save(path: str, outputs: dict[str, np.ndarray]) -> None:
    try:
        with open(path, "wb") as f:
            np.savez(f, **outputs)  # type: ignore[arg-type]
    except OSError as e:
        raise CimcError(f"cannot write the outputs: {e.strerror or e}", path) from None


def _json(
    program: Program, arch: Arch, outputs: dict[str, np.ndarray], steps: int, dequantized: bool
) -> dict[str, object]:
    return {
        "program": program.source_name,
        "arch": arch.name,
        "instructions_executed": steps,
        "dequantized": dequantized,
        "outputs": {
            name: {
                "shape": list(v.shape),
                "dtype": str(v.dtype),
                "min": v.min().item() if v.size else None,
                "max": v.max().item() if v.size else None,
                "first_values": v.reshape(-1)[:8].tolist(),
            }
            for name, v in outputs.items()
        },
    }


def _print_outputs(
    outputs: dict[str, np.ndarray], steps: int, arch: str, dequantized: bool
) -> None:
    kind = "dequantized outputs" if dequantized else "outputs (integer codes)"
    title = f"{kind} ({number(steps)} instructions executed on '{arch}')"
    columns = ("output", "dtype", "shape", "min", "max", "first values")
    t = table(title, *columns, left=("first values",))
    for name, value in outputs.items():
        flat = value.reshape(-1)
        first = " ".join(number(v) for v in flat[:8]) + (" ..." if flat.size > 8 else "")
        low, high = (number(flat.min()), number(flat.max())) if flat.size else ("-", "-")
        t.add_row(name, str(value.dtype), "x".join(map(str, value.shape)), low, high, first)
    console().print(t)
