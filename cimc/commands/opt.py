"""`cimc opt`: IR text in, a pipeline of registered passes, IR text out (as mlir-opt)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cimc.commands import add_command
from cimc.commands.json_output import add_json_option, print_json
from cimc.commands.pass_options import add_pass_debug_options, list_passes, manager_switches
from cimc.errors import CimcError
from cimc.progress import add_quiet_option, report

if TYPE_CHECKING:  # the passes pull in torch: import them only when the command runs
    import numpy as np

    from cimc.ir.graph import Graph
    from cimc.machine.arch import Arch
    from cimc.passes.manager import Pass, PassManager

NAME = "opt"
HELP = "run passes on a graph in IR text (float or quantized) and print the result"
EPILOG = """\
examples:
  cimc opt block.ir -p simplify,cse,dce
  cimc opt block.ir -p canonicalize,quantize{samples=4} -o block.q.ir
  cimc opt block.q.ir --print-ir-after-all -p cse,dce > /dev/null
  cimc opt model.onnx --seq-len 8 -p canonicalize -o model.ir
  cimc opt block.q.ir -p tile,map,plan-values --arch tiny
  cimc opt --list-passes

FILE.ir takes the arrays it names by reference (@name) from FILE.ir.safetensors beside
it, or from --constants; -o OUT.ir writes OUT.ir.safetensors beside it when the result has
such arrays (small graphs are self-contained text). FILE may be `-` (standard input), or an
.onnx / .pt2 model, which is imported first. `cimc compile --print-ir-after PASS` prints
IR this command reads (its `// -----` header is a comment), but not the model's weights:
rerun the passes with `cimc opt MODEL -p ... -o OUT.ir` to have them, or fill them with
--random-constants. The input is graph IR (float or quantized); backend passes (tile
... merge-sends, `backend`) print their own IR levels (plans, programs), take the
architecture from --arch (or tile{arch=NAME}), and -o OUT.cimasm writes a program as
`cimc compile` does. IR dumps (--print-ir-*, --time-passes) go to stderr; so does a note
when the printed IR names arrays that are in no file (-q leaves it out).
"""

MODEL_SUFFIXES = (".onnx", ".pt2")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, NAME, HELP, EPILOG)
    p.add_argument("file", nargs="?", metavar="FILE", help="IR text (.ir), '-', .onnx or .pt2")
    p.add_argument("-p", "--pipeline", default="", metavar="PIPELINE", help="passes to run")
    p.add_argument("-o", "--output", metavar="OUT.ir", help="write here (default: stdout)")
    p.add_argument("--constants", metavar="FILE", help="arrays of @names (.safetensors/.npz)")
    p.add_argument(
        "--random-constants",
        type=int,
        metavar="SEED",
        help="fill @name arrays that have no data with random values (hand-written IR)",
    )
    p.add_argument(
        "--arch", metavar="PRESET|FILE.toml", help="architecture of the backend passes (tile...)"
    )
    p.add_argument("--seq-len", type=int, metavar="N", help="bind a model's sequence axis")
    p.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME=D0,D1,...",
        help="bind a model input's shape (repeatable)",
    )
    add_pass_debug_options(p)
    add_quiet_option(p)
    add_json_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:

    if list_passes(args, args.file, "an IR file ('-': standard input)"):
        return 0
    _check_output(args.output)
    graph, known = _read(args)
    manager = _manager(args)
    result = manager.run(graph)
    if args.json:
        _print_json(args, manager, result, known)
        return 0
    _write(args, result, known)
    return 0


def _print_json(args: argparse.Namespace, manager: Any, result: Any, known: dict) -> None:
    """The passes run, their times, the IR level reached, and the IR (text, or the file)."""
    from cimc.passes.manager import default_printer

    if args.output:
        _write(args, result, known)
    print_json(
        NAME,
        {
            "passes": [
                {"name": t.name, "wall_seconds": t.seconds, "modified": t.modified}
                for t in manager.timings
            ],
            "output": args.output,
            "ir": None if args.output else default_printer(result),
        },
    )


def _check_output(path: str | None) -> None:
    """Refuse an output in a missing folder, or named as a tensor file, before any work."""
    from cimc.ir.tensor_file import SUFFIXES

    if path is None:
        return
    if not Path(path).resolve().parent.is_dir():
        raise CimcError("cannot write here: the folder does not exist", path)
    if Path(path).suffix in SUFFIXES:
        raise CimcError(f"IR text cannot go to a {Path(path).suffix} file; name it FILE.ir", path)


def _read(args: argparse.Namespace) -> tuple[Graph, dict[str, np.ndarray]]:
    """The input graph and the arrays it was read with (all dialects loaded)."""
    from cimc.dialects import load_dialects
    from cimc.ir.ir_file import arrays_for, read_text
    from cimc.ir.parser import parse_graph
    from cimc.ir.tensor_file import side_file

    load_dialects()
    if Path(args.file).suffix in MODEL_SUFFIXES:
        return _import(args), {}
    stdin = args.file == "-"
    text = sys.stdin.read() if stdin else read_text(args.file)
    known = arrays_for(None if stdin else args.file, args.constants)
    source = "<stdin>" if stdin else args.file
    beside = "" if stdin else f"put it in {side_file(args.file)}, "
    hint = f"{beside}give --constants FILE, or fill it with --random-constants SEED"
    graph = parse_graph(
        text, known, source=source, random_seed=args.random_constants, no_data_hint=hint
    )
    return graph, known


def _import(args: argparse.Namespace) -> Graph:
    from cimc.api import import_model
    from cimc.commands.compile import parse_shapes

    if not Path(args.file).is_file():
        raise CimcError("model file not found", args.file)
    shapes = parse_shapes(args.shape) or None
    return import_model(args.file, shapes=shapes, seq_len=args.seq_len)


def _manager(args: argparse.Namespace) -> PassManager:
    from cimc.passes.manager import PassManager, Step, expand, parse_pipeline

    passes = parse_pipeline(args.pipeline) if args.pipeline.strip() else []
    arch = _arch(args.arch) if args.arch else None
    name = Path(args.file).stem or "model"
    steps = [Step(_configure(s.p, arch, name), s.group) for s in expand(passes)]
    return PassManager(
        steps,
        **manager_switches(args),
        print_fn=lambda text: sys.stderr.write(text),
        on_pass=lambda k, p: report("opt", k, len(steps), f"pass {p.NAME}"),
    )


def _configure(p: Pass, arch: Arch | None, name: str) -> Pass:
    """A backend pass gets the --arch architecture and the file's stem as program name."""
    if arch is None:
        return p
    from cimc.backend.stages.backend import configure_backend

    return configure_backend(p, arch, name)


def _arch(name: str) -> Arch:
    from cimc.machine.arch import load_arch

    try:
        return load_arch(name)
    except CimcError as e:
        if e.location is None:  # a preset name: point at the option
            raise CimcError(e.message, "--arch") from None
        raise


def _write(args: argparse.Namespace, ir: Any, known: dict[str, np.ndarray]) -> None:
    """The result to -o (a graph with its side file) or to stdout."""
    from cimc.backend.builder.compiled import Compiled
    from cimc.backend.builder.saved import write_compiled
    from cimc.ir.graph import Graph
    from cimc.ir.ir_file import unwritten_arrays, write_ir_file
    from cimc.passes.manager import default_printer

    if args.output and isinstance(ir, Graph):
        write_ir_file(ir, args.output)
        return
    if args.output and isinstance(ir, Compiled):
        write_compiled(ir, Path(args.output), args.pipeline)  # + OUT.safetensors, as compile
        return
    text = default_printer(ir)
    if args.output:
        _write_text(args.output, text)
        return
    sys.stdout.write(text)
    missing = unwritten_arrays(ir, known) if isinstance(ir, Graph) else []
    if missing and not args.quiet:
        sys.stderr.write(
            f"cimc opt: {len(missing)} array(s) printed by reference (@{missing[0]}, ...) "
            "are in no file; -o OUT.ir writes them to OUT.ir.safetensors\n"
        )


def _write_text(path: str, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as e:
        raise CimcError(f"cannot write the IR: {e.strerror or e}", path) from None
