"""`cimc compile`: a model file -> assembly program + constants (import, passes, backend)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cimc.commands import add_command
from cimc.commands.json_output import add_json_option, print_json
from cimc.commands.pass_options import add_pass_debug_options, list_passes
from cimc.errors import CimcError
from cimc.machine.arch import Arch, load_arch
from cimc.progress import add_quiet_option

if TYPE_CHECKING:  # the pipeline pulls in torch: import it only when a command runs
    from cimc.pipeline import PipelineOptions, PipelineResult

DEFAULT_PIPELINE = (
    "idioms,check-canonical,quantize,backend"  # == cimc.pipeline.DEFAULT_PIPELINE (tested)
)

NAME = "compile"
HELP = "compile a model (ONNX or .pt2) to an assembly program and its constants"
EPILOG = f"""\
example:
  cimc example bert-tiny -o models/
  cimc compile models/bert-tiny.onnx -o bert.cimasm --arch tiny --seq-len 8
  cimc compile model.onnx --shape input_ids=1,16 --calibration calib.npz --time-passes
  cimc compile model.onnx --seq-len 8 --print-ir-after map      # which tile in which macro
  cimc compile models/opt-relu-tiny.onnx --seq-len 1 --sparsity exact   # active rows only
  cimc compile models/opt-relu-tiny.onnx --seq-len 1 --sparsity predict # + predicted columns
  cimc compile --list-passes

Writes OUT.cimasm and OUT.safetensors (the constants it names) beside it. The default
pipeline is "{DEFAULT_PIPELINE}" (`backend` = tile, map, plan-values, plan-memory,
plan-sparsity, lower, stage-consts, hoist-const-loads, merge-sends); -p replaces it: it
must contain quantize, and a pipeline that stops at a graph gets the backend passes appended.
Without --calibration, scales come from generated inputs (a note says so on stderr).
"""


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Options shared by compile and verify."""
    p.add_argument(
        "model", metavar="MODEL", nargs="?", help="model file: .onnx or .pt2 (torch.export)"
    )
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
        help=f"passes to run (default: {DEFAULT_PIPELINE})",
    )
    add_pass_debug_options(p)
    p.add_argument(
        "--streaming",
        choices=["auto", "sequential", "double-buffer", "pin-what-fits"],
        metavar="POLICY",
        help="weight streaming policy of the map pass: auto (default), sequential, "
        "double-buffer, pin-what-fits",
    )
    add_mapping_option(p)
    add_sparsity_option(p)
    add_weight_options(p)
    add_quiet_option(p)


def add_mapping_option(p: argparse.ArgumentParser, what: str = "", pipeline: bool = True) -> None:
    """--mapping, and --stages unless `pipeline` is off (decode programs concatenate the
    rows of their sequences: no batch axis to stream)."""
    piped = (
        "pipeline (stages of layers on core groups, the batch streamed through them as "
        "micro-batches; needs a batch of 2 or more), "
        if pipeline
        else ""
    )
    p.add_argument(
        "--mapping",
        choices=["auto", "spread", "duplicate", *(["pipeline"] if pipeline else [])],
        metavar="MAPPING",
        help="layers on the macros (map pass): spread (each layer once), duplicate (copies of "
        f"hot layers on spare macros split the token rows; needs every weight resident), "
        f"{piped}or auto (default: every candidate lowered, the smallest modelled makespan "
        f"kept){what}",
    )
    if not pipeline:
        return
    p.add_argument(
        "--stages",
        type=int,
        metavar="N",
        help="pipeline stages of --mapping pipeline and of auto's pipeline candidates "
        "(default: 2, 4 and 8 up to the cores and micro-batches all lowered, the fastest kept)",
    )
    p.add_argument(
        "--micro-batches",
        type=int,
        metavar="N",
        help="micro-batches the pipeline streams, a divisor of the batch (default: one batch "
        "element each, at most 8)",
    )


def add_sparsity_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sparsity",
        choices=["none", "exact", "predict"],
        metavar="MODE",
        help="none (default): every weight row loads; exact: after ReLU-like activations "
        "only the rows of non-zero inputs load (bit-identical; plan-sparsity pass); "
        "predict: a low-rank predictor fitted on the calibration data also skips the "
        "up-projection columns of neurons it predicts inactive (an approximation the "
        "integer golden applies too; predict-sparsity pass)",
    )
    p.add_argument(
        "--window",
        type=int,
        metavar="K",
        help="with --sparsity exact|predict: sparse layers whose rows live in flash copy the rows "
        "of active neurons into a DRAM cache that keeps those of the last K runs (0..100)",
    )


def checked_window(args: argparse.Namespace) -> int | None:
    """--window, checked against --sparsity before any work."""
    from cimc.backend.plan.window import check_window

    check_window(args.window, args.sparsity or "none")
    return args.window  # type: ignore[no-any-return]


def add_weight_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weight-bits",
        type=int,
        choices=(4, 8),
        metavar="4|8",
        help="bits of the linear layers' weights (4: per-channel int4, packed two a macro "
        "cell and a byte of the weight image; default 8)",
    )
    p.add_argument(
        "--keep-int8",
        metavar="NAME,NAME,...",
        help="linear layers whose node name contains one of these keep 8-bit weights "
        "(e.g. lm_head)",
    )
    p.add_argument(
        "--weight-group",
        type=int,
        metavar="G",
        help="one weight scale per G reduction rows and output channel instead of one per "
        "channel (exact integer multipliers; e.g. 32)",
    )


def weight_options(args: argparse.Namespace) -> dict[str, object]:
    keep = tuple(part for part in (args.keep_int8 or "").split(",") if part.strip())
    group = args.weight_group
    if group is not None and group < 1:
        raise CimcError(f"must be a positive number of rows, got {group}", "--weight-group")
    return {"weight_bits": args.weight_bits, "keep_int8": keep, "weight_group": group}


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
    for flag in ("stages", "micro_batches"):
        value = getattr(args, flag, None)
        if value is not None and value < 2:
            option = "--" + flag.replace("_", "-")
            raise CimcError(f"{option} must be 2 or more (a pipeline), got {value}", option)
    return PipelineOptions(
        pipeline=args.pipeline,
        seq_len=args.seq_len,
        shapes=parse_shapes(args.shape),
        calibration=args.calibration,
        print_ir_after_all=args.print_ir_after_all,
        print_ir_after=tuple(args.print_ir_after),
        print_ir_before=tuple(args.print_ir_before),
        print_ir_after_change=args.print_ir_after_change,
        time_passes=args.time_passes,
        validate_each=args.validate_each,
        print_fn=lambda text: sys.stderr.write(text),
        streaming=args.streaming,
        mapping=args.mapping,
        stages=getattr(args, "stages", None),
        micro_batches=getattr(args, "micro_batches", None),
        sparsity=args.sparsity,
        window=checked_window(args),
        **weight_options(args),  # type: ignore[arg-type]
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
    add_json_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cimc.backend.builder.saved import write_compiled
    from cimc.inspect.mapping import program_mapping
    from cimc.quant.summary import recipe_summary

    if list_passes(args, args.model, "a model file"):
        return 0
    result, arch = compile_from_args(args)
    out = Path(args.output) if args.output else Path(args.model).with_suffix(".cimasm")
    if out.suffix != ".cimasm":
        raise CimcError("the output must end in .cimasm", str(out))
    path, consts = write_compiled(result.compiled, out, args.pipeline)
    program = result.compiled.program
    count = sum(len(s.instrs) for s in program.cores)
    mapping = program_mapping(program)
    if args.json:
        print_json(
            NAME,
            {"program": str(path), "constants": str(consts), "arch": arch.name,
             "cores": len(program.cores), "instructions": count, "pipeline": args.pipeline,
             "mapping": mapping.mapping, "copies": mapping.copies,
             "core_groups": mapping.core_groups, "stages": [vars(s) for s in mapping.stages],
             "micro_batches": mapping.micro_batches},
        )  # fmt: skip
        return 0
    copied = f", {len(mapping.copies)} layers duplicated" if mapping.copies else ""
    if mapping.stages:
        copied = f", {len(mapping.stages)} pipeline stages x {mapping.micro_batches} micro-batches"
    print(
        f"wrote {path} + {consts}: {count} instructions on {len(program.cores)} cores "
        f"of '{arch.name}'{copied}"
    )
    print(recipe_summary(result.graph))
    return 0
