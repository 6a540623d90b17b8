"""A design decision on or off, side by side: makespan, bound, instructions per variant.

Each `--variant NAME:CHANGE,...` compiles the same imported model with the default
pipeline, changed for that compile only, and prints the simulated makespan, the workload
lower bound, their ratio q, the instruction count and the number of `send` and `mcast`
instructions. A CHANGE is `module.ATTR=LITERAL` (the attribute replaced by a Python
literal, restored after) or `-PASS` (a pass of the `backend` stages left out, e.g.
`-hoist-const-loads`). A variant without changes is the code as it is.
benchmarks/FINDINGS.md lists the decisions measured this way.

    python benchmarks/ablate.py --layers 4 --arch large \\
        --variant now --variant 64k:cimc.backend.stream.prefetch.LOOKAHEAD_CYCLES=65536
    python benchmarks/ablate.py --model bert-tiny.onnx --seq-len 16 --arch tiny --variant now \\
        --variant staged:cimc.backend.program_passes.stage_consts.MAX_SHARE=1.0

Compiles are deterministic, so one run per variant is the figure (no repeats needed).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cimc.backend.plan.bounds import lower_bound  # noqa: E402
from cimc.backend.plan.from_graph import workload_from_graph  # noqa: E402
from cimc.backend.plan.target import Target  # noqa: E402
from cimc.backend.stages.backend import Backend  # noqa: E402
from cimc.ir.graph import Graph  # noqa: E402
from cimc.machine.arch import load_arch  # noqa: E402
from cimc.machine.schedule import simulate  # noqa: E402
from cimc.pipeline import DEFAULT_PIPELINE, PipelineOptions, compile_model  # noqa: E402


@dataclass(frozen=True)
class Patch:
    module: str
    attr: str
    value: Any


@dataclass(frozen=True)
class Variant:
    name: str
    patches: list[Patch]
    pipeline: str


def parse_variant(text: str) -> Variant:
    name, _, spec = text.partition(":")
    patches, dropped = [], set()
    for item in filter(None, spec.split(",")):
        if item.startswith("-"):
            dropped.add(item[1:])
            continue
        target, _, value = item.partition("=")
        module, _, attr = target.rpartition(".")
        if not module or not value:
            raise SystemExit(f"variant {name}: '{item}' is not module.ATTR=VALUE or -PASS")
        patches.append(Patch(module, attr, _literal(value)))
    return Variant(name, patches, _pipeline_without(dropped))


def _pipeline_without(dropped: set[str]) -> str:
    """The default pipeline with `backend` spelled out as its passes, minus `dropped`."""
    stages = [p.NAME for p in Backend().passes()]
    unknown = sorted(dropped - set(stages))
    if unknown:
        raise SystemExit(f"not a backend pass: {', '.join(unknown)} (passes: {', '.join(stages)})")
    top = DEFAULT_PIPELINE.split(",")
    names = [n for step in top for n in (stages if step == Backend.NAME else [step])]
    return ",".join(n for n in names if n not in dropped)


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise SystemExit(f"'{text}' is not a Python literal") from None


@contextmanager
def patched(patches: list[Patch]) -> Iterator[None]:
    saved = []
    for p in patches:
        module = importlib.import_module(p.module)
        if not hasattr(module, p.attr):
            raise SystemExit(f"{p.module} has no attribute {p.attr}")
        saved.append((module, p.attr, getattr(module, p.attr)))
        setattr(module, p.attr, p.value)
    try:
        yield
    finally:
        for module, attr, value in reversed(saved):
            setattr(module, attr, value)


def measure(
    graph: Graph | str, arch_name: str, seq_len: int | None, pipeline: str
) -> dict[str, int]:
    arch = load_arch(arch_name)
    result = compile_model(graph, arch, PipelineOptions(pipeline=pipeline, seq_len=seq_len))
    program = result.compiled.program
    opcodes = Counter(i.opcode for core in program.cores for i in core.instrs)
    bound = lower_bound(workload_from_graph(result.graph), Target.from_arch(arch))
    return {
        "makespan": simulate(program, arch).makespan,
        "bound": bound.cycles,
        "instructions": sum(opcodes.values()),
        "send": opcodes["send"],
        "mcast": opcodes["mcast"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", action="append", required=True, help="NAME[:CHANGE,...]")
    ap.add_argument("--layers", type=int, default=4, help="BERT-base depth (without --model)")
    ap.add_argument("--model", help="a model file (.onnx, .pt2) instead of BERT-base")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--arch", nargs="+", default=["large"])
    args = ap.parse_args(argv)
    variants = [parse_variant(v) for v in args.variant]
    graph: Graph | str = args.model or _bert(args.layers, args.seq_len)
    seq_len = args.seq_len if args.model else None
    print(f"{'arch':<8}{'variant':<14}{'makespan':>11}{'bound':>11}{'q':>7}{'instrs':>9}", end="")
    print(f"{'send':>7}{'mcast':>7}")
    for arch in args.arch:
        for v in variants:
            with patched(v.patches), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = measure(graph, arch, seq_len, v.pipeline)
            q = m["makespan"] / m["bound"]
            print(
                f"{arch:<8}{v.name:<14}{m['makespan']:>11,}{m['bound']:>11,}{q:>7.3f}"
                f"{m['instructions']:>9,}{m['send']:>7,}{m['mcast']:>7,}",
                flush=True,
            )
    return 0


def _bert(layers: int, seq_len: int) -> Graph:
    from backend_bench import bert_graph

    return bert_graph(layers, seq_len, "torch")


if __name__ == "__main__":
    sys.exit(main())
