"""`cimc compile`: a model file -> assembly program + constants (import, passes, backend)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cimc.commands import add_command
from cimc.errors import CimcError
from cimc.machine.arch import Arch, load_arch
from cimc.progress import add_quiet_option

if TYPE_CHECKING:  # the pipeline pulls in torch: import it only when a command runs
    from cimc.pipeline import PipelineOptions, PipelineResult

DEFAULT_PIPELINE = (
    "canonicalize,check-canonical,quantize"  # == cimc.pipeline.DEFAULT_PIPELINE (tested)
)

NAME = "compile"
HELP = "compile a model (ONNX or .pt2) to an assembly program and its constants"
EPILOG = f"""\
example:
  cimc example bert-tiny -o models/
  cimc compile models/bert-tiny.onnx -o bert.cimasm --arch tiny --seq-len 8
  cimc compile model.onnx --shape input_ids=1,16 --calibration calib.npz --time-passes

Writes OUT.cimasm and OUT.safetensors (the constants it names) beside it. The default
pipeline is "{DEFAULT_PIPELINE}"; -p replaces it (it must contain quantize).
Without --calibration, scales come from generated inputs (a note says so on stderr).
"""


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Options shared by compile and verify."""
    p.add_argument("model", metavar="MODEL", help="model file: .onnx or .pt2 (torch.export)")
    p.add_argument(
        "--arch",
        metavar="PRESET|FILE.toml",
        default="default",
        help="architecture preset or TOML file (default: default)",
    )
    p.add_argument("--seq-len", type=int, metavar="N", help="bind the symbolic sequence axis")
    p.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME=D0,D1,...",
        help="bind an input's shape (repeatable)",
    )
    p.add_argument("--calibration", metavar="FILE.npz", help="calibration inputs (np.savez)")
    p.add_argument(
        "-p",
        "--pipeline",
        default=DEFAULT_PIPELINE,
        metavar="PIPELINE",
        help=f"graph passes (default: {DEFAULT_PIPELINE})",
    )
    p.add_argument("--print-ir-after-all", action="store_true", help="print the IR after each pass")
    p.add_argument(
        "--print-ir-after",
        action="append",
        default=[],
        metavar="PASS",
        help="print the IR after this pass (repeatable)",
    )
    p.add_argument("--time-passes", action="store_true", help="print the time of each pass")
    p.add_argument(
        "--streaming",
        choices=["auto", "sequential", "double-buffer", "pin-what-fits"],
        default="auto",
        metavar="POLICY",
        help="weight streaming policy: auto (default), sequential, double-buffer, pin-what-fits",
    )
    add_quiet_option(p)


def parse_shapes(items: list[str]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for item in items:
        name, sep, dims = item.partition("=")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) < 1:
            raise CimcError(
                f"bad --shape {item!r}; write NAME=D0,D1,... (e.g. input_ids=1,16)", "--shape"
            )
        shapes[name] = shape
    return shapes


def pipeline_options(args: argparse.Namespace) -> PipelineOptions:
    from cimc.pipeline import PipelineOptions

    if args.seq_len is not None and args.seq_len < 1:
        raise CimcError(f"--seq-len must be positive, got {args.seq_len}", "--seq-len")
    return PipelineOptions(
        pipeline=args.pipeline,
        seq_len=args.seq_len,
        shapes=parse_shapes(args.shape),
        calibration=args.calibration,
        print_ir_after_all=args.print_ir_after_all,
        print_ir_after=tuple(args.print_ir_after),
        time_passes=args.time_passes,
        print_fn=lambda text: sys.stderr.write(text),
        streaming=args.streaming,
    )


def compile_from_args(args: argparse.Namespace) -> tuple[PipelineResult, Arch]:
    from cimc.pipeline import compile_model

    if not Path(args.model).is_file():
        raise CimcError("model file not found", args.model)
    arch = load_arch(args.arch)
    return compile_model(args.model, arch, pipeline_options(args)), arch


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, NAME, HELP, EPILOG)
    add_model_options(p)
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT.cimasm",
        help="program to write (default: MODEL with suffix .cimasm)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cimc.backend.compile import write_compiled

    result, arch = compile_from_args(args)
    out = Path(args.output) if args.output else Path(args.model).with_suffix(".cimasm")
    if out.suffix != ".cimasm":
        raise CimcError("the output must end in .cimasm", str(out))
    path, consts = write_compiled(result.compiled, out)
    program = result.compiled.program
    count = sum(len(s.instrs) for s in program.cores)
    extra = f" + {consts}" if consts else ""
    print(
        f"wrote {path}{extra}: {count} instructions on {len(program.cores)} cores of '{arch.name}'"
    )
    return 0
