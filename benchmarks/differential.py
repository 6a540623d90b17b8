"""Long differential run: N random transformer-like models on random archs.

    python benchmarks/differential.py --cases 500 [--start 0] [--json out.json]
    python benchmarks/differential.py --cases 40 --mapping duplicate   # duplicated layers

Prints one line per finding and the counts (bit-exact / compile error / mismatch / crash).
Exit 1 when any mismatch or crash was found.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.differential.runner import BUGS, run_case, summarize  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=500)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--json", type=Path)
    p.add_argument("--mapping", help="the map pass's mapping (default: the compiler's own)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    started, outcomes, errors = time.perf_counter(), [], Counter()
    for seed in range(args.start, args.start + args.cases):
        with contextlib.redirect_stderr(io.StringIO()):  # calibration notes
            outcome = run_case(seed, mapping=args.mapping)
        outcomes.append(outcome)
        if outcome.kind in BUGS:
            print(outcome.line(), flush=True)
        elif outcome.kind == "compile-error":
            errors[outcome.detail.split(": ", 1)[-1][:100]] += 1
    counts = summarize(outcomes)
    print(f"{len(outcomes)} cases in {time.perf_counter() - started:.0f} s: {counts}")
    for message, n in errors.most_common():
        print(f"  compile error x{n}: {message}")
    if args.json:
        args.json.write_text(json.dumps({"counts": counts, "compile_errors": dict(errors)}))
    return 1 if any(counts[k] for k in BUGS) else 0


if __name__ == "__main__":
    sys.exit(main())
