"""SIGKILL a program writer at random points and count what a reader then finds.

    python benchmarks/fault_injection.py --kills 100

Two compiles of one MLP with other weights (the same program text but for the constants'
hash, constants of the same names and shapes) are written over the same names, A then B,
forever, by a child process using cimc.machine.artifact (what `cimc compile` and
CompiledModel.save use). The child is killed after a random 0-300 ms; three runs happen
while it writes (a concurrent compile) and one after the kill. Each run finds: the
program of A or B running with its own constants (`ran A`, `ran B`: the outputs equal that
compile's), a refusal (the constants' hash does not match), or a wrong result (`WRONG`,
which must never appear). The helpers are the fault-injection test's
(tests/machine/test_artifact.py), which runs 12 kills on every test run.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    import cimc
    from cimc.machine.arch import load_arch
    from tests.machine import test_artifact as t

    tmp = Path(tempfile.mkdtemp())
    pair = {
        k: cimc.compile(t.Mlp(seed), example_inputs=(t.X,), arch="tiny")
        for k, seed in (("a", 0), ("b", 1))
    }
    sources = {k: m.save(tmp / k / "m.cimasm") for k, m in pair.items()}
    texts = {path.read_text(): k for k, path in sources.items()}
    expected = {k: m.codes(t.X)["output"] for k, m in pair.items()}
    target = tmp / "out" / "m.cimasm"
    target.parent.mkdir()
    arch, rng = load_arch("tiny"), random.Random(args.seed)
    counts: Counter[str] = Counter()
    for _ in range(args.kills):
        writer = t._start_writer(target, sources)
        time.sleep(rng.uniform(0.0, 0.3))
        for _ in range(3):
            counts["while writing: " + t._outcome(target, texts, expected, pair["a"], arch)] += 1
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        counts["after the kill: " + t._outcome(target, texts, expected, pair["a"], arch)] += 1
    for outcome, n in sorted(counts.items()):
        print(f"{n:5d}  {outcome}")
    return 1 if any("WRONG" in k for k in counts) else 0


if __name__ == "__main__":
    sys.exit(main())
