"""Compile time vs depth (issue 5): BERT-base dims at 2, 4, 8... layers, per arch preset.

For each depth the same imported float graph is compiled for every preset in turn, as
backend_bench does; calibration depends only on the float graph, so presets after the
first reuse it (cimc.quant.calibrate caches it). Prints seconds per pass group, the
instruction count, and seconds per layer, which stays flat when compile time is linear.

`--warm` compiles each case twice and times the second (caches filled, as a compile
server or a sweep sees it); `--profile N` runs the timed compile under cProfile and prints
its N costliest functions by own time; `--sha` prints the sha256 of the program text, so
two checkouts can be shown to emit the same bytes. `--roots A B` measures the checkouts at
A and B side by side: each case in a fresh process of each checkout (PYTHONPATH), the
checkouts alternating `--rounds` times, so load on a shared host hits both alike; the
ratio column is each root's median against the first root's.

Run by hand: `python benchmarks/compile_bench.py [--layers 2 4 8] [--arch default large]`
    python benchmarks/compile_bench.py --layers 12 --arch large --warm --sha \\
        --roots /work/main . --rounds 2
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy's import: read once

import torch  # noqa: E402

from cimc.machine.arch import load_arch  # noqa: E402
from cimc.machine.printer import print_program  # noqa: E402
from cimc.pipeline import PipelineOptions, compile_model  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backend_bench import bert_graph  # noqa: E402


def _row(*cells: object) -> str:
    widths = (8, 3, 10, 9, 9, 9, 8)
    return "".join(
        f"{c!s:<{w}}" if i == 0 else f"{c!s:>{w}}"
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def _measure(args: argparse.Namespace) -> list[dict[str, object]]:
    """Every (layers, arch) case in this process: one dict per case."""
    rows: list[dict[str, object]] = []
    for layers in args.layers:
        graph = bert_graph(layers, args.seq_len, "torch")
        for name in args.arch:
            arch = load_arch(name)
            if args.warm:
                compile_model(graph, arch, PipelineOptions())
            profiler = cProfile.Profile() if args.profile else None
            options = PipelineOptions(time_passes=True, print_fn=lambda _: None)
            if profiler is not None:
                profiler.enable()
            started = time.perf_counter()
            result = compile_model(graph, arch, options)
            total = time.perf_counter() - started
            if profiler is not None:
                profiler.disable()
            parts = {t.name: t.seconds for t in result.timings}
            program = result.compiled.program
            row: dict[str, object] = dict(
                arch=name,
                layers=layers,
                compile_s=total,
                quantize_s=parts.get("quantize", 0.0),
                backend_s=parts.get("backend", 0.0),
                instrs=sum(len(s.instrs) for s in program.cores),
            )
            if args.sha:
                row["sha256"] = hashlib.sha256(print_program(program).encode()).hexdigest()
            if profiler is not None:
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.profile)
                row["profile"] = out.getvalue()
            rows.append(row)
    return rows


def _print(rows: list[dict[str, object]]) -> None:
    print(_row("arch", "L", "compile s", "quantize", "backend", "instrs", "s/layer"))
    for r in rows:
        cells = (r["arch"], r["layers"], f"{r['compile_s']:.1f}", f"{r['quantize_s']:.1f}")
        per_layer = float(r["compile_s"]) / int(r["layers"])  # type: ignore[arg-type]
        print(_row(*cells, f"{r['backend_s']:.1f}", r["instrs"], f"{per_layer:.2f}"))
        if "sha256" in r:
            print(f"  program sha256 {r['sha256']}")
        if "profile" in r:
            print(r["profile"])


def _compare(args: argparse.Namespace) -> int:
    """Each root's cases in fresh child processes, the roots alternating round by round."""
    child = ["--layers", *map(str, args.layers), "--arch", *args.arch, "--json"]
    child += ["--seq-len", str(args.seq_len), "--profile", str(args.profile)]
    child += ["--warm"] * args.warm + ["--sha"] * args.sha
    runs: dict[str, list[list[dict[str, object]]]] = {root: [] for root in args.roots}
    for round_ in range(args.rounds):
        for root in args.roots:
            env = {**os.environ, "PYTHONPATH": os.path.abspath(root)}
            cmd = [sys.executable, os.path.abspath(__file__), *child]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
            rows = json.loads(out)
            runs[root].append(rows)
            print(f"round {round_ + 1} root {root}")
            _print(rows)
    print("\nmedian compile s over rounds, ratio to the first root:")
    base = args.roots[0]
    for i, case in enumerate(runs[base][0]):
        ref = statistics.median(float(r[i]["compile_s"]) for r in runs[base])  # type: ignore[arg-type]
        for root in args.roots:
            med = statistics.median(float(r[i]["compile_s"]) for r in runs[root])  # type: ignore[arg-type]
            sha = runs[root][0][i].get("sha256", "")
            print(f"  {case['arch']} L={case['layers']} {root}: {med:.2f} s  "
                  f"x{med / ref:.3f}  {str(sha)[:16]}")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--arch", nargs="+", default=["default", "large"])
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--warm", action="store_true", help="time a second compile of each case")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="top N by own time")
    ap.add_argument("--sha", action="store_true", help="sha256 of each program's text")
    ap.add_argument("--roots", nargs="+", default=[], help="checkouts to compare side by side")
    ap.add_argument("--rounds", type=int, default=1, help="with --roots: rounds per checkout")
    ap.add_argument("--json", action="store_true", help="one JSON list of the cases")
    args = ap.parse_args(argv)
    if args.roots:
        return _compare(args)
    torch.set_num_threads(1)
    rows = _measure(args)
    if args.json:
        print(json.dumps(rows))
    else:
        _print(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
