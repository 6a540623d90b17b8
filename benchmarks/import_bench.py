"""ONNX import (translation and the idioms pass) time and peak memory of a BERT-base-size model.

    python benchmarks/import_bench.py [--exporter legacy|dynamo] [--seq-len 128] [--layers 12]
    python benchmarks/import_bench.py --onnx model.onnx --seq-len 128   # an existing file

Exports a random-weight BERT-base (hidden 768, 12 layers), then imports it in a fresh
child process (so the exporter's memory does not count) and reports `cimc.import_model`
time (load, fold, translate, the idioms pass), the tracemalloc peak of Python/numpy
allocations during the import, and the child's peak RSS, against the weight bytes.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

MIB = 1 << 20


def measure(path: Path, seq_len: int) -> None:
    """Import `path` twice (timed, then under tracemalloc) and print the figures."""
    from cimc.api import import_model
    from cimc.importers import import_onnx  # noqa: F401 - modules load before the clock starts
    from cimc.passes.idioms import Idioms  # noqa: F401

    started = time.perf_counter()
    graph = import_model(path, seq_len=seq_len)
    seconds = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # before the second import
    del graph
    tracemalloc.start()
    graph = import_model(path, seq_len=seq_len)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    weights = sum(v.nbytes for v in graph.constants().values())
    ops = Counter(n.op.NAME for n in graph.nodes())
    file_mib = path.stat().st_size / MIB
    print(f"constants        {weights / MIB:8.1f} MiB  (onnx file {file_mib:.1f} MiB)")
    print(f"import           {seconds:8.2f} s")
    print(f"tracemalloc peak {peak / MIB:8.1f} MiB  = {peak / weights:.2f} x constants")
    ratio = rss / weights
    print(f"peak RSS         {rss / MIB:8.1f} MiB  = {ratio:.2f} x constants (process, with torch)")
    print(f"graph            {len(graph)} nodes: {dict(sorted(ops.items()))}")


def export(exporter: str, seq_len: int, layers: int, out_dir: Path) -> Path:
    from cimc.zoo import build_model, example_inputs, export_onnx, weight_bytes

    model = build_model("bert", "base", num_hidden_layers=layers)
    started = time.perf_counter()
    path = export_onnx(
        model, example_inputs(model, seq_len=seq_len), out_dir / "bert.onnx", exporter=exporter
    )
    print(f"model            bert-base, {layers} layers, seq {seq_len}, {exporter} exporter")
    print(f"weights          {weight_bytes(model) / MIB:8.1f} MiB (torch parameters)")
    print(f"export           {time.perf_counter() - started:8.2f} s")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exporter", default="legacy", choices=["legacy", "dynamo"])
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--onnx", type=Path, help="import this file instead of exporting")
    args = parser.parse_args()
    if args.onnx:
        measure(args.onnx, args.seq_len)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = export(args.exporter, args.seq_len, args.layers, Path(tmp))
        sys.stdout.flush()
        child = [sys.executable, __file__, "--onnx", str(path), "--seq-len", str(args.seq_len)]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        subprocess.run(child, check=True, env=env)


if __name__ == "__main__":
    main()
