"""Run one benchmark in two checkouts, alternating, and print the ratio of each figure.

    git worktree add /tmp/base main~3          # the checkout to compare against
    python benchmarks/side_by_side.py --base /tmp/base --runs 3 -- \
        backend_bench.py --layers 12 --arch large --json

The benchmark (a script of benchmarks/ that prints a JSON list of rows with `--json`) runs
as `python benchmarks/SCRIPT ARGS` in each checkout with that checkout first on
PYTHONPATH, in the order base, this, base, this, ... so that the load of a shared machine
falls on both alike. Each time figure (a key ending in `_s`) is reported as the minimum
over the runs of each checkout and as this / base; other figures must agree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]


def run_once(checkout: Path, command: list[str]) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    script = checkout / "benchmarks" / command[0]
    proc = subprocess.run(
        [sys.executable, str(script), *command[1:]],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"{checkout}: {' '.join(command)} failed:\n{proc.stderr[-2000:]}")
    rows = json.loads(proc.stdout[proc.stdout.index("[") :])
    return rows if isinstance(rows, list) else [rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, required=True, help="the checkout to compare against")
    ap.add_argument("--this", type=Path, default=HERE, help="the checkout measured (default: here)")
    ap.add_argument("--runs", type=int, default=2, help="runs per checkout (default 2)")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- SCRIPT [ARGS]")
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the benchmark after --, e.g. -- backend_bench.py --json")
    results: dict[str, list[list[dict[str, Any]]]] = {"base": [], "this": []}
    for k in range(args.runs):
        for label, checkout in (("base", args.base.resolve()), ("this", args.this.resolve())):
            results[label].append(run_once(checkout, command))
            print(f"run {k + 1} {label} done", file=sys.stderr, flush=True)
    print(report(results))
    return 0


def report(results: dict[str, list[list[dict[str, Any]]]]) -> str:
    lines = [f"{'row':<24}{'figure':<14}{'base':>10}{'this':>10}{'this/base':>11}"]
    for i, row in enumerate(results["this"][0]):
        label = " ".join(str(row[k]) for k in ("arch", "layers") if k in row) or str(i)
        for key in sorted(row):
            base = [run[i][key] for run in results["base"]]
            this = [run[i][key] for run in results["this"]]
            if key.endswith("_s"):
                b, t = min(base), min(this)
                lines.append(f"{label:<24}{key:<14}{b:>10.3f}{t:>10.3f}{t / b:>11.3f}")
            elif len({json.dumps(v) for v in base + this}) > 1:
                lines.append(f"{label:<24}{key:<14}{base[0]!s:>10}{this[0]!s:>10}  DIFFER")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
