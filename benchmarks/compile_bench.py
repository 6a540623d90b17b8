"""Compile time vs depth (issue 5): BERT-base dims at 2, 4, 8... layers, per arch preset.

For each depth the same imported float graph is compiled for every preset in turn, as
backend_bench does; calibration depends only on the float graph, so presets after the
first reuse it (cimc.quant.calibrate caches it). Prints wall and CPU seconds of the
compile (CPU time of the process: steadier on a shared host), the quantize and lower passes
and the backend (every pass after quantize; verification between passes is in neither),
the instruction count, and seconds per layer, which stays flat when compile time is linear.

`--warm` compiles each case twice and times the second (caches filled, as a compile
server or a sweep sees it); `--profile N` runs the timed compile under cProfile and prints
its N costliest functions by own time; `--sha` prints the sha256 of the program text, so
two checkouts can be shown to emit the same bytes. `--roots A B` measures the checkouts at
A and B side by side: each case in a fresh process of each checkout (PYTHONPATH), the
checkouts alternating `--rounds` times, so load on a shared host hits both alike; the
ratio columns are each root's medians (wall, CPU) against the first root's.

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
    widths = (8, 3, 10, 8, 9, 8, 9, 8, 8)
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
            started, cpu = time.perf_counter(), time.process_time()
            result = compile_model(graph, arch, options)
            total, cpu = time.perf_counter() - started, time.process_time() - cpu
            if profiler is not None:
                profiler.disable()
            names = [t.name for t in result.timings]
            after_quantize = result.timings[names.index("quantize") + 1 :]
            program = result.compiled.program
            row: dict[str, object] = dict(
                arch=name,
                layers=layers,
                compile_s=total,
                cpu_s=cpu,
                quantize_s=sum(t.seconds for t in result.timings if t.name == "quantize"),
                lower_s=sum(t.seconds for t in result.timings if t.name == "lower"),
                backend_s=sum(t.seconds for t in after_quantize),
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
    print(_row("arch", "L", "compile s", "cpu s", "quantize", "lower", "backend", "instrs",
               "s/layer"))  # fmt: skip
    for r in rows:
        secs = [f"{r[k]:.1f}" for k in ("compile_s", "cpu_s", "quantize_s", "lower_s", "backend_s")]
        per_layer = float(r["compile_s"]) / int(r["layers"])  # type: ignore[arg-type]
        print(_row(r["arch"], r["layers"], *secs, r["instrs"], f"{per_layer:.2f}"))
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
    print("\nmedians over the rounds (wall s, CPU s), ratios to the first root's:")
    base = args.roots[0]

    def median(root: str, case: int, key: str) -> float:
        return statistics.median(float(r[case][key]) for r in runs[root])  # type: ignore[arg-type]

    for i, case in enumerate(runs[base][0]):
        wall0, cpu0 = median(base, i, "compile_s"), median(base, i, "cpu_s")
        for root in args.roots:
            wall, cpu = median(root, i, "compile_s"), median(root, i, "cpu_s")
            sha = runs[root][0][i].get("sha256", "")
            print(f"  {case['arch']} L={case['layers']} {root}: {wall:.2f} s x{wall / wall0:.3f}"
                  f"  cpu {cpu:.2f} s x{cpu / cpu0:.3f}  {str(sha)[:16]}")  # fmt: skip
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
