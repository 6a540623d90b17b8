"""Shared pieces of the fuzzers: the finding type, one importer case's result, and the
long-run loop behind benchmarks/fuzz_onnx.py and benchmarks/fuzz_pt2.py."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


class FuzzBug(Exception):
    """A finding: `kind` names the broken property, the message says what happened."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


def check_error(e: Exception) -> str:
    """The text of a refusal; a finding unless it is one non-empty line."""
    text = str(e)
    if "\n" in text or not text.strip():
        raise FuzzBug("multi-line-error", repr(text[:300]))
    return text


@dataclass(frozen=True)
class Result:
    """One mutated model through an importer: refused (with its message) or imported."""

    seed: int
    base: str
    mutation: str
    outcome: str  # refused | imported
    detail: str


FuzzOne = Callable[[int, Path, bool], Result]


def run_seeds(
    fuzz_one: FuzzOne, seeds: range, cli_every: int, note: Callable[[Result], str | None]
) -> Counter[str]:
    """Every seed once (every `cli_every`-th through the CLI too); findings printed."""
    counts: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        for k, seed in enumerate(seeds, 1):
            cli = cli_every > 0 and seed % cli_every == 0
            try:
                result = fuzz_one(seed, Path(tmp), cli)
                counts[result.outcome] += 1
                extra = note(result)
                if extra:
                    counts[extra] += 1
            except FuzzBug as e:
                counts[f"bug:{e.kind}"] += 1
                print(f"seed {seed}: {e}", flush=True)
            counts["cli"] += cli
            if k % 500 == 0:
                print(f"{k} cases: {dict(counts)}", file=sys.stderr, flush=True)
    return counts


def campaign_main(
    fuzz_one: FuzzOne,
    doc: str,
    what: str,
    defaults: tuple[int, int],
    note: Callable[[Result], str | None] = lambda r: None,
    argv: Sequence[str] | None = None,
) -> int:
    """The command line of a long run: --cases, --start, --cli-every; exit 1 on findings."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--cases", type=int, default=defaults[0])
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--cli-every", type=int, default=defaults[1])
    args = p.parse_args(argv)
    started = time.perf_counter()
    seeds = range(args.start, args.start + args.cases)
    counts = run_seeds(fuzz_one, seeds, args.cli_every, note)
    print(f"{args.cases} {what} in {time.perf_counter() - started:.0f} s: {dict(counts)}")
    return 1 if any(k.startswith("bug") for k in counts) else 0
