"""`cimc example`: write a built-in random-weight model (cimc/zoo) as an ONNX file."""

from __future__ import annotations

import argparse

from cimc.commands import add_command
from cimc.commands.json_output import add_json_option, print_json
from cimc.progress import add_quiet_option, report
from cimc.zoo.catalog import EXAMPLES, ONNX_EXPORTERS

NAME = "example"
HELP = "write a built-in example model (random weights) as ONNX"
EPILOG = f"""\
example:
  cimc example bert-tiny -o models/
  cimc verify models/bert-tiny.onnx --arch tiny --seq-len 8

Examples: {", ".join(sorted(EXAMPLES))}. The ONNX file has symbolic batch and sequence
axes (inputs input_ids and attention_mask); bind them with --seq-len when compiling.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, NAME, HELP, EPILOG)
    p.add_argument("name", metavar="NAME", help=f"one of {', '.join(sorted(EXAMPLES))}")
    p.add_argument("-o", "--output", metavar="DIR", default=".", help="folder (default: .)")
    p.add_argument(
        "--seq-len",
        type=int,
        default=8,
        metavar="N",
        help="sequence length traced at export (default 8)",
    )
    p.add_argument("--exporter", choices=ONNX_EXPORTERS, help="ONNX exporter (default: dynamo)")
    add_quiet_option(p)
    add_json_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cimc.zoo import write_example  # torch + transformers: only when exporting

    report("export", 0, 1, f"{args.name} (model build and ONNX export take seconds)")
    path = write_example(args.name, args.output, seq_len=args.seq_len, exporter=args.exporter)
    report("export", 1, 1)
    if args.json:
        print_json(NAME, {"example": args.name, "written": [str(path)]})
    else:
        print(f"wrote {path}")
    return 0
