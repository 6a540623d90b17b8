"""Sparsity-aware weight loading ("LLM in a flash", tables 2-3 in shape): bytes, latency
and energy per decoded token of an OPT-style ReLU LM, dense against `--sparsity exact`,
weights in DRAM and weights split with flash, against the naive plan.

    python benchmarks/sparse_bench.py                        # 4 x 256 (ffn 1024) on default
    python benchmarks/sparse_bench.py --arch tiny --layers 2 --hidden 64 --ffn 256

The model (cimc/zoo/relu_lm.py: GPT-2 blocks with ReLU FFNs whose up-projection biases are
shifted so that --zeros of the activations are 0) is compiled into prefill and decode
programs and generates --steps tokens in the interpreter, checked bit for bit against the
integer golden at every step. Each decode step is priced by the cost model from its own
run (the rows its sparse layers loaded, cimc/machine/dynamic.py); a row averages the
steady-state steps (after the first decode step when weights stay in the macros).
Memory: `dram` keeps the whole image in DRAM; `flash` gives DRAM --fraction of the
weights plus what the rest of the program needs (benchmarks/flash_bench.py), the rest
streams from flash. Plans: naive (every weight from flash, or from DRAM, every token: no
DRAM cache, nothing kept in the macros), dense (the memory plan, weights kept in the
macros where they stay), exact (dense plus sparse down-projections from DRAM; a layer in
flash stays dense), exact + window K (`--window K`: the sparse layers in flash too, their
active neurons' rows copied into a DRAM cache that keeps the neurons of the last K tokens;
in the `dram` rows no layer is in flash, so a window changes nothing there).
Prints a Markdown table and one JSON object (--json-out FILE writes it too).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.flash_bench import with_dram  # noqa: E402


def build(args: argparse.Namespace) -> Any:
    import torch

    from cimc.zoo.export import export_torch
    from cimc.zoo.relu_lm import relu_lm

    lm = relu_lm(args.hidden, args.layers, args.ffn, args.vocab, args.hidden // 64, 64, args.zeros)
    ids = torch.arange(8).reshape(1, 8) % args.vocab
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_torch(lm, (ids, torch.ones_like(ids)), dynamic=True)


def measure(
    exported: Any,
    loaded: Any,
    arch: Any,
    args: argparse.Namespace,
    sparsity: str,
    keep: bool,
    window: int | None = None,
) -> dict:
    """Generate --steps tokens; the steady-state decode steps' average cost (each run
    priced from its own record of the rows it loaded)."""
    from cimc.commands.generate import run_costs
    from cimc.decode.generate import generate_batch
    from cimc.decode.programs import build_decoder
    from cimc.pipeline import PipelineOptions

    options = PipelineOptions(sparsity=sparsity, window=window)
    progs = build_decoder(
        exported, arch, args.prompt, loaded.capacity, options, loaded=loaded, keep_weights=keep
    )
    prompt = [(7 * i + 3) % args.vocab for i in range(args.prompt)]
    result = generate_batch(progs, [prompt], args.steps, with_float=True)
    first = 2 if progs.warm is not None else 1
    priced = run_costs(result)[first:]
    costs = [p.cost for p in priced]
    shares = [a for p in priced for a in p.active.values()]
    predicted = [a for p in priced for a in p.predicted.values()]
    steps = result.sequences[0].steps[first:]
    recalls = [r for s in steps for r in s.predictor_recall.values()]

    def mean(field: str) -> float:
        return sum(getattr(c, field) for c in costs) / len(costs)

    return {
        "weight_bytes": mean("weight_bytes_loaded"),
        "flash_bytes": mean("flash_bytes"),
        "dram_bytes": mean("dram_bytes"),
        "cycles": mean("cycles"),
        "ms": mean("cycles") / arch.chip.clock_mhz / 1000,
        "energy_uj": mean("energy_uj"),
        "active": sum(shares) / len(shares) if shares else None,
        "predicted": sum(predicted) / len(predicted) if predicted else None,
        "recall": sum(recalls) / len(recalls) if recalls else None,
        "float_agreement": result.sequences[0].float_agreement,
        "bit_exact": result.bit_exact,
        "steps": len(costs),
    }


def main() -> None:
    from cimc.decode.programs import load_decoder, shared_reserve, with_predictors
    from cimc.decode.report import model_weight_bytes
    from cimc.decode.specialize import specialize
    from cimc.machine.arch import load_arch
    from cimc.pipeline import PipelineOptions

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--arch", default="default")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--ffn", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--zeros", type=float, default=0.9)
    p.add_argument("--prompt", type=int, default=4)
    p.add_argument("--steps", type=int, default=5, help="tokens generated (>= 3)")
    p.add_argument("--fraction", type=float, default=0.5, help="DRAM share of the weights")
    p.add_argument(
        "--windows", default="0,1,2,4,8", help="window sizes K of the windowed rows (comma list)"
    )
    p.add_argument(
        "--chunk", type=int, help="memory.flash_chunk_bytes of the arch (default: the preset's)"
    )
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    base = load_arch(args.arch)
    if args.chunk is not None:  # e.g. chunks of a few neuron rows, as the paper's bundles
        base = replace(base, memory=replace(base.memory, flash_chunk_bytes=args.chunk))
    started = time.perf_counter()
    exported = build(args)
    loaded = load_decoder(exported, args.prompt + args.steps)
    graphs = [specialize(loaded.qgraph, loaded.axes, n) for n in (args.prompt, 1)]
    predict_graph, predict_axes = with_predictors(
        loaded.qgraph, loaded.axes, PipelineOptions(sparsity="predict")
    )
    predicted = replace(loaded, qgraph=predict_graph, axes=predict_axes)
    weights = model_weight_bytes(loaded.qgraph)
    other = shared_reserve(graphs, base)
    small = with_dram(base, other + int(args.fraction * weights))
    rows = []
    for memory, arch, naive_arch in (
        ("dram", base, base),
        ("flash", small, with_dram(base, other)),
    ):
        plans: list[tuple[str, Any, str, bool, int | None]] = [
            ("naive", naive_arch, "none", False, None),
            ("dense", arch, "none", True, None),
            ("exact", arch, "exact", True, None),
        ]
        windows = [int(k) for k in args.windows.split(",")] if memory == "flash" else [2]
        plans += [("exact", arch, "exact", True, k) for k in windows]
        plans += [("predict", arch, "predict", True, None)]
        plans += [("predict", arch, "predict", True, k) for k in windows]
        for plan, a, sparsity, keep, window in plans:
            model = predicted if sparsity == "predict" else loaded
            m = measure(exported, model, a, args, sparsity, keep, window)
            rows.append({"memory": memory, "plan": plan, "window": window, **m})
            print(_line(rows[-1], 1.0), file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    print(
        f"model: OPT-style ReLU LM {args.layers} x {args.hidden} (ffn {args.ffn}, vocab "
        f"{args.vocab}, {args.zeros:.0%} zeros), {weights:,} int8 weight bytes; arch "
        f"{args.arch} (flash chunk {base.memory.flash_chunk_bytes} B); flash rows: DRAM = "
        f"{args.fraction:g} x weights + {other:,}; {elapsed:.0f} s"
    )
    print(
        "| memory | plan | window | weight B/token | flash B/token | DRAM B/token | "
        "cycles/token | ms/token | uJ/token | active | predicted (recall) | float agreement "
        "| speedup vs naive | bit-exact |"
    )
    print("|" + "---|" * 14)
    for r in rows:
        naive = next(x for x in rows if x["memory"] == r["memory"] and x["plan"] == "naive")
        print(_line(r, naive["cycles"] / r["cycles"]))
    report = {"weights": weights, "other_dram": other, "rows": rows}
    print(json.dumps(report))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))


def _line(r: dict, speedup: float) -> str:
    active = "-" if r["active"] is None else f"{r['active']:.1%}"
    cells = (
        r["memory"],
        r["plan"],
        "-" if r["window"] is None else str(r["window"]),
        f"{r['weight_bytes']:,.0f}",
        f"{r['flash_bytes']:,.0f}",
        f"{r['dram_bytes']:,.0f}",
        f"{r['cycles']:,.0f}",
        f"{r['ms']:.3f}",
        f"{r['energy_uj']:.1f}",
        active,
        "-" if r["predicted"] is None else f"{r['predicted']:.1%} ({r['recall']:.3f})",
        f"{r['float_agreement']:.2f}",
        f"{speedup:.2f}x",
        str(r["bit_exact"]),
    )
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    main()
