"""Compile time vs depth (issue 5): BERT-base dims at 2, 4, 8... layers, per arch preset.

For each depth the same imported float graph is compiled for every preset in turn, as
backend_bench does; calibration depends only on the float graph, so presets after the
first reuse it (cimc.quant.calibrate caches it). Prints seconds per pass group, the
instruction count, and seconds per layer, which stays flat when compile time is linear.

Run by hand: `python benchmarks/compile_bench.py [--layers 2 4 8] [--arch default large]`
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy's import: read once

import torch  # noqa: E402

from cimc.machine.arch import load_arch  # noqa: E402
from cimc.pipeline import PipelineOptions, compile_model  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backend_bench import bert_graph  # noqa: E402


def _row(*cells: object) -> str:
    widths = (8, 3, 10, 9, 9, 9, 8)
    return "".join(
        f"{c!s:<{w}}" if i == 0 else f"{c!s:>{w}}"
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--arch", nargs="+", default=["default", "large"])
    ap.add_argument("--seq-len", type=int, default=128)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(_row("arch", "L", "compile s", "quantize", "backend", "instrs", "s/layer"))
    for layers in args.layers:
        graph = bert_graph(layers, args.seq_len, "torch")
        for name in args.arch:
            options = PipelineOptions(time_passes=True, print_fn=lambda _: None)
            started = time.perf_counter()
            result = compile_model(graph, load_arch(name), options)
            total = time.perf_counter() - started
            parts = {t.name: t.seconds for t in result.timings}
            instrs = sum(len(s.instrs) for s in result.compiled.program.cores)
            row = (name, layers, f"{total:.1f}", f"{parts.get('quantize', 0):.1f}")
            print(_row(*row, f"{parts.get('backend', 0):.1f}", instrs, f"{total / layers:.2f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
