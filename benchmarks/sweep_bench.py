"""`cimc sweep` on a BERT-base-size encoder: the Pareto front, the knob that matters most,
and the wall time of the same sweep on local processes and on a local Ray cluster.

The model: BERT-base dims (hidden 768, 12 heads, intermediate 3072), random weights,
`--layers` deep, exported once to ONNX at `--seq-len`. The space (examples/
sweep_bert_base.toml, 54 grid points on the default preset): macros per core, the core
mesh, the DRAM bandwidth and the streaming policy. Each sweep writes its own folder under
`-o`; a rerun resumes the studies there (delete the folder to measure again).
`--ray-address` adds a third run on a cluster started beforehand (`ray start --head`), so
the three executors are timed side by side; `--space` sweeps another space file.

    python benchmarks/sweep_bench.py -o /tmp/sweep-bench     # --workers 2, then --ray local
    python benchmarks/sweep_bench.py -o /tmp/sweep-bench --only workers    # one of the two
    python benchmarks/sweep_bench.py -o /tmp/sb --space small.toml --ray-address 127.0.0.1:6379
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "examples" / "sweep_bert_base.toml"


def export(out: Path, layers: int, seq_len: int) -> Path:
    path = out / f"bert-base-{layers}l-s{seq_len}.onnx"
    if path.is_file():
        return path
    from cimc.zoo import build_model, example_inputs
    from cimc.zoo.export import export_onnx

    model = build_model("bert", "base", num_hidden_layers=layers)
    inputs = example_inputs(model, seq_len=seq_len)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(model, inputs, path, exporter="legacy", dynamic=False)
    return path


def sweep(model: Path, space: Path, out: Path, how: list[str]) -> dict[str, Any]:
    argv = [sys.executable, "-m", "cimc", "sweep", str(model), "--space", str(space)]
    argv += ["-o", str(out)]
    started = time.perf_counter()
    done = subprocess.run([*argv, *how, "--json", "-q"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"cimc sweep {' '.join(how)} failed: {done.stderr.strip()}")
    doc: dict[str, Any] = json.loads(done.stdout)
    doc["process_seconds"] = round(time.perf_counter() - started, 1)
    return doc


def table(out: Path) -> dict[tuple[str, ...], tuple[str, ...]]:
    import csv

    with (out / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    knobs = [k for k in rows[0] if "." in k]
    figures = ("state", "makespan_cycles", "energy_uj", "area_mm2", "error")
    return {tuple(r[k] for k in knobs): tuple(r[f] for f in figures) for r in rows}


def report(name: str, doc: dict[str, Any]) -> None:
    print(
        f"{name}: {doc['trials']} trials ({doc['completed']} completed, {doc['failed']} failed, "
        f"{doc['ran']} run now) in {doc['wall_seconds']:.1f} s of sweep, "
        f"{doc['process_seconds']:.1f} s with the interpreter start, on {doc['executor']}"
    )
    print(f"  Pareto front (latency, energy, area): {len(doc['pareto'])} trials")
    for p in sorted(doc["pareto"], key=lambda p: p["latency_us"]):
        knobs = ", ".join(f"{k}={v}" for k, v in p["params"].items())
        print(
            f"    #{p['trial']:<3} {p['latency_us']:>10,.1f} us {p['energy_uj']:>9,.1f} uJ "
            f"{p['area_mm2']:>7,.2f} mm2  {knobs}"
        )
    for m in doc["most_sensitive"]:
        print(f"  {m['objective']}: {m['knob']} explains {m['share']:.0%} of the variance")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True, type=Path)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", choices=("workers", "ray", "address"))
    parser.add_argument("--space", type=Path, default=SPACE, help="space file (default: 54 points)")
    parser.add_argument("--ray-address", metavar="ADDRESS", help="also sweep on this cluster")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    model = export(args.output, args.layers, args.seq_len)
    runs = {"workers": ["--workers", str(args.workers)], "ray": ["--ray", "local"]}
    if args.ray_address:
        runs["address"] = ["--ray", args.ray_address]
    docs = {}
    for name, how in runs.items():
        if args.only in (None, name):
            docs[name] = sweep(model, args.space, args.output / name, how)
            report(" ".join(how), docs[name])
    tables = {name: table(args.output / name) for name in docs}
    for name in list(tables)[1:]:
        same = tables[name] == tables[next(iter(tables))]
        print(f"same table on {next(iter(tables))} and {name} (up to trial order): {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
