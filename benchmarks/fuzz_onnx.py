"""Long ONNX importer fuzz run: N mutated models through cimc.api.import_model.

    python benchmarks/fuzz_onnx.py --cases 5000 [--start 0] [--cli-every 50]

Every `--cli-every`-th case also goes through `cimc compile` (in-process). Prints each
finding and the counts; exit 1 when any was found.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fuzz_onnx.harness import FuzzBug, fuzz_one  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=5000)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--cli-every", type=int, default=50)
    args = p.parse_args()
    counts: Counter[str] = Counter()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.start, args.start + args.cases):
            cli = args.cli_every > 0 and seed % args.cli_every == 0
            try:
                counts[fuzz_one(seed, Path(tmp), cli=cli).outcome] += 1
            except FuzzBug as e:
                counts[f"bug:{e.kind}"] += 1
                print(f"seed {seed}: {e}", flush=True)
            counts["cli"] += cli
    print(f"{args.cases} mutated models in {time.perf_counter() - started:.0f} s: {dict(counts)}")
    return 1 if any(k.startswith("bug") for k in counts) else 0


if __name__ == "__main__":
    sys.exit(main())
