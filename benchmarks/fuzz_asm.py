"""Long fuzzing campaign of the machine layer: parser, validator, interpreter, cost model.

Three kinds of cases, each checked by tests/fuzz/harness.py (`check_case`):
- generated: random valid programs (tests/machine/strategies.py) for the tiny, default,
  large and zigzag-dimc presets, up to four cores, printed to text;
- mutated: the shipped examples and generated programs after one to four text mutations
  (tests/fuzz/mutate.py), with sometimes deliberately wrong inputs;
- arch: a program run with a mutated copy of its arch preset (`--arch FILE.toml`).

Prints the count of every outcome and writes each finding (a `FuzzBug`) to --save.

    python benchmarks/fuzz_asm.py --generated 20000 --mutated 60000 --arch 20000 --seed 1
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

from cimc.machine.arch import load_arch  # noqa: E402
from cimc.machine.printer import print_program  # noqa: E402
from cimc.machine.program import Program  # noqa: E402
from cimc.resources import isa_dir  # noqa: E402
from tests.fuzz.harness import Case, FuzzBug, Workdir, check_case  # noqa: E402
from tests.fuzz.mutate import mutate, mutate_toml  # noqa: E402
from tests.machine.strategies import Geometry, programs  # noqa: E402

PRESETS = ("tiny", "default", "large", "zigzag-dimc")


class Campaign:
    def __init__(self, work: Workdir, save: Path, seed_value: int) -> None:
        self.work, self.save = work, save
        self.rng = random.Random(seed_value)
        self.counts: Counter[str] = Counter()
        self.pool: list[tuple[str, str]] = []  # generated texts to mutate
        self.started = time.time()

    def check(self, kind: str, case: Case, parser_check: bool = False) -> None:
        try:
            outcome = check_case(case, self.work, self.rng, parser_check)
        except FuzzBug as bug:
            outcome = f"BUG {bug.kind}"
            self._keep(kind, case, str(bug))
        self.counts[f"{kind}: {outcome}"] += 1
        total = sum(self.counts.values())
        if total % 1000 == 0:
            rate = total / (time.time() - self.started)
            print(f"{total} cases, {rate:.0f}/s, {self._bugs()} bugs", file=sys.stderr)
        if total % 5000 == 0:  # partial counts survive an interrupted campaign
            print(json.dumps({"cases": total, "counts": dict(self.counts)}), file=sys.stderr)

    def _bugs(self) -> int:
        return sum(n for k, n in self.counts.items() if "BUG" in k)

    def _keep(self, kind: str, case: Case, message: str) -> None:
        self.save.mkdir(parents=True, exist_ok=True)
        n = len(list(self.save.glob("*.cimasm")))
        stem = self.save / f"{kind}-{n:05d}"
        stem.with_suffix(".cimasm").write_text(case.text, errors="surrogateescape")
        info = {"name": case.name, "error": message}
        if case.arch_toml is not None:
            stem.with_suffix(".toml").write_text(case.arch_toml)
        stem.with_suffix(".json").write_text(json.dumps(info, indent=1))

    def generated(self, count: int, seed_value: int) -> None:
        for i, name in enumerate(PRESETS):
            geo = Geometry.of(load_arch(name))
            n = count // len(PRESETS) + (i < count % len(PRESETS))
            if n:
                self._generate(geo, n, seed_value + i)

    def _generate(self, geo: Geometry, n: int, seed_value: int) -> None:
        @seed(seed_value)
        @settings(
            max_examples=n,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(programs(geo))
        def one(program: Program) -> None:
            text = print_program(program)
            if len(self.pool) < 2000:
                self.pool.append(("gen.cimasm", text))
            self.check("generated", Case(text, "gen.cimasm", report_twice=0.2))

        one()

    def mutated(self, count: int) -> None:
        seeds = Workdir.seeds() + self.pool
        donors = tuple(text for _, text in seeds[:8])
        for _ in range(count):
            name, text = self.rng.choice(seeds)
            case = Case(mutate(text, self.rng, donors), name, report_twice=0.2)
            self.check("mutated", case, parser_check=self.rng.random() < 0.1)

    def arch(self, count: int) -> None:
        seeds = Workdir.seeds()
        for _ in range(count):
            name, text = self.rng.choice(seeds)
            preset = text.split("\n", 1)[0].removeprefix(".arch ").strip()
            toml = (isa_dir() / "arch" / f"{preset}.toml").read_text()
            toml = mutate_toml(toml, self.rng)
            self.check("arch", Case(text, name, toml, input_noise=0.0, report_twice=0.2))


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM: stop and print the counts so far


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--generated", type=int, default=2000)
    p.add_argument("--mutated", type=int, default=6000)
    p.add_argument("--arch", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", type=Path, default=Path("fuzz-findings"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="cimc-fuzz-") as tmp:
        campaign = Campaign(Workdir(Path(tmp)), args.save, args.seed)
        signal.signal(signal.SIGTERM, _stop)
        try:
            campaign.arch(args.arch)
            campaign.generated(args.generated, args.seed)
            campaign.mutated(args.mutated)
        except KeyboardInterrupt:
            print("interrupted: partial counts", file=sys.stderr)
    elapsed = time.time() - campaign.started
    total = sum(campaign.counts.values())
    print(f"{total} cases in {elapsed:.0f} s (seed {args.seed})")
    for key, n in sorted(campaign.counts.items()):
        print(f"  {key:55} {n:8}")
    print(json.dumps({"cases": total, "seed": args.seed, "counts": dict(campaign.counts)}))
    return 1 if campaign._bugs() else 0


if __name__ == "__main__":
    sys.exit(main())
