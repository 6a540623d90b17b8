"""ONNX import + canonicalize time and peak memory of a BERT-base-size model.

    python benchmarks/import_bench.py [--exporter legacy|dynamo] [--seq-len 128] [--layers 12]

Exports a random-weight BERT-base (hidden 768, 12 layers) once, then measures
`import_onnx` (load, fold, translate, idioms) with tracemalloc (peak of Python/numpy
allocations during the import) and the process's peak RSS, against the weight bytes.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

from cimc.importers import import_onnx
from cimc.zoo import build_model, example_inputs, export_onnx, weight_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exporter", default="legacy", choices=["legacy", "dynamo"])
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--layers", type=int, default=12)
    args = parser.parse_args()

    model = build_model("bert", "base", num_hidden_layers=args.layers)
    weights = weight_bytes(model)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        path = export_onnx(
            model, example_inputs(model, seq_len=args.seq_len), Path(tmp) / "bert.onnx",
            exporter=args.exporter,
        )  # fmt: skip
        export_s = time.perf_counter() - started
        file_bytes = sum(p.stat().st_size for p in Path(tmp).iterdir())
        del model
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        tracemalloc.start()
        started = time.perf_counter()
        graph = import_onnx(path, seq_len=args.seq_len)
        import_s = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        # a second import without tracemalloc: its overhead inflates the timing above
        started = time.perf_counter()
        import_onnx(path, seq_len=args.seq_len)
        plain_s = time.perf_counter() - started

    ops = Counter(n.op.NAME for n in graph.nodes())
    mib = 1 << 20
    print(f"model            bert-base, {args.layers} layers, seq {args.seq_len}, {args.exporter}")
    print(f"weights          {weights / mib:8.1f} MiB  (onnx files {file_bytes / mib:.1f} MiB)")
    print(f"export           {export_s:8.2f} s")
    print(f"import           {plain_s:8.2f} s  ({import_s:.2f} s under tracemalloc)")
    print(f"tracemalloc peak {peak / mib:8.1f} MiB  = {peak / weights:.2f} x weights")
    print(
        f"peak RSS         {rss_after / mib:8.1f} MiB  (before import {rss_before / mib:.1f} MiB)"
    )
    print(f"graph            {len(graph)} nodes: {dict(sorted(ops.items()))}")


if __name__ == "__main__":
    main()
