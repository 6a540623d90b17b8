"""Autoregressive decoding cost: prefill + greedy decode of a GPT-2-size model, bit-exact.

    python benchmarks/decode_bench.py                          # GPT-2 small: 12 x 768, vocab 50257
    python benchmarks/decode_bench.py --layers 2 --hidden 128 --vocab 1024 --archs tiny,default
    python benchmarks/decode_bench.py --layers 2 --vocab 8192 --new 3 --batches 1,4,8,16

For each preset: builds the prefill and decode programs (one capacity-C integer graph),
generates --new tokens after a --prompt-token prompt in the interpreter side by side with
the integer golden (every logit compared), and prints per-token cycles, energy, weight
bytes loaded, load time hidden behind compute, the roofline position and the ratio of the
per-token time to the streaming lower bound (int8 weight bytes / DRAM bandwidth). With
--policies, the decode program is compiled once per weight streaming policy and the
per-token figures are compared (cimc/decode/policies.py). Prints one JSON object at the
end (--json-out FILE writes it too). Wall-clock times are of this machine, for reference.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any


def build(args: argparse.Namespace) -> Any:
    from cimc.zoo import build_model, example_inputs
    from cimc.zoo.export import export_torch

    overrides = {
        "n_layer": args.layers,
        "n_embd": args.hidden,
        "n_head": args.hidden // 64,
        "vocab_size": args.vocab,
        "n_positions": max(64, args.prompt + args.new),
    }
    model = build_model("gpt2", head="lm", **overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_torch(model, example_inputs(model, seq_len=8), dynamic=True)


def run_arch(exported: Any, loaded: Any, arch_name: str, args: argparse.Namespace) -> dict:
    from cimc.commands.generate import cost_line
    from cimc.decode.generate import generate
    from cimc.decode.policies import compare_policies
    from cimc.decode.programs import build_decoder
    from cimc.decode.report import token_cost
    from cimc.machine.arch import load_arch

    arch = load_arch(arch_name)
    started = time.perf_counter()
    progs = build_decoder(
        exported, arch, args.prompt, loaded.capacity, loaded=loaded, streaming=args.streaming
    )
    built = time.perf_counter() - started
    prompt = [(7 * i + 3) % args.vocab for i in range(args.prompt)]
    started = time.perf_counter()
    result = generate(progs, prompt, args.new, with_float=True)
    ran = time.perf_counter() - started
    costs = [
        token_cost(progs.prefill, "prefill", args.prompt),
        token_cost(progs.decode, "decode", 1),
    ]
    if progs.warm is not None:
        costs.append(token_cost(progs.decode, "decode-warm", 1, progs.warm.warm))
    for c in costs:
        print(cost_line(c))
    print(
        f"{arch_name}: bit-exact {result.bit_exact}, tokens {list(result.tokens)}, float "
        f"agreement {result.float_agreement:.0%}; compile {built:.1f} s, run {ran:.1f} s"
    )
    out = {
        "bit_exact": result.bit_exact,
        "tokens": list(result.tokens),
        "golden_tokens": list(result.golden_tokens),
        "float_agreement": result.float_agreement,
        "compile_s": built,
        "generate_s": ran,
        "cost": {c.program: c.as_json() for c in costs},
    }
    if args.policies:
        rows = compare_policies(loaded, arch, args.prompt, verify_steps=args.verify_policies)
        for row in rows:
            print(row.line())
        out["policies"] = [row.as_json() for row in rows]
    return out


def run_batches(exported: Any, loaded: Any, arch_name: str, args: argparse.Namespace) -> list:
    """One row per batch size: B prompts of different lengths generated together, every
    sequence checked bit for bit; the per-token figures of the last decode step (the
    steady state: warm when weights stay in the macros, at the largest window reached)."""
    from cimc.commands.generate import run_costs
    from cimc.decode.generate import generate_batch
    from cimc.decode.programs import build_decoder
    from cimc.machine.arch import load_arch

    arch = load_arch(arch_name)
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        lens = [2 + (i % (args.prompt - 1)) for i in range(batch)]
        prompts = [[(7 * i + 3 * s + 1) % args.vocab for i in range(n)] for s, n in enumerate(lens)]
        started = time.perf_counter()
        progs = build_decoder(exported, arch, lens, loaded.capacity, loaded=loaded)
        result = generate_batch(progs, prompts, args.new, with_float=False)
        c = run_costs(result)[-1].cost
        row = {
            "arch": arch_name,
            "batch": batch,
            "bit_exact": result.bit_exact,
            "program": result.runs[-1].name,
            "tokens_per_s": c.tokens_per_second,
            "energy_uj_per_token": c.energy_per_token_uj,
            "weight_bytes_per_token": c.weight_bytes_per_token,
            "offchip_bytes_per_token": c.offchip_bytes_per_token,
            "ops_per_byte": c.ops_per_byte,
            "memory_bound": c.memory_bound,
            "seconds": time.perf_counter() - started,
        }
        print(
            f"| {arch_name} | W{args.weight_bits} | {batch} | {row['program']} | "
            f"{c.tokens_per_second:,.0f} | "
            f"{c.energy_per_token_uj:.2f} | {c.weight_bytes_per_token:,.0f} | "
            f"{c.offchip_bytes_per_token:,.0f} | {c.ops_per_byte:.2f} | "
            f"{'memory' if c.memory_bound else 'compute'} | {result.bit_exact} |",
            flush=True,
        )
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--prompt", type=int, default=5)
    p.add_argument("--new", type=int, default=9, help="new tokens (decode steps + 1)")
    p.add_argument("--archs", default="default,large")
    p.add_argument("--policies", action="store_true", help="compare weight streaming policies")
    p.add_argument(
        "--verify-policies", type=int, default=0, metavar="STEPS", help="decode steps to check"
    )
    p.add_argument("--streaming", default="auto", help="policy of the generated programs")
    p.add_argument("--json-out", metavar="FILE")
    p.add_argument("--weight-bits", type=int, default=8, choices=(4, 8))
    p.add_argument("--weight-group", type=int, default=0, metavar="G")
    p.add_argument(
        "--batches",
        metavar="B,B,...",
        help="instead: one decode row per batch size (prompts of different lengths)",
    )
    args = p.parse_args()
    from cimc.decode.programs import load_decoder

    started = time.perf_counter()
    from cimc.pipeline import PipelineOptions

    exported = build(args)
    options = PipelineOptions(weight_bits=args.weight_bits, weight_group=args.weight_group or None)
    loaded = load_decoder(exported, args.prompt + args.new, options)
    print(f"export + quantize: {time.perf_counter() - started:.1f} s")
    if args.batches:
        print("| arch | weights | batch | step | tokens/s | uJ/token | weight B/token | "
              "off-chip B/token | ops/byte | bound | bit-exact |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        rows = [r for a in args.archs.split(",") for r in run_batches(exported, loaded, a, args)]
        report_rows = {"config": vars(args), "rows": rows}
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(report_rows, indent=2))
        return
    report = {
        "config": vars(args),
        "archs": {a: run_arch(exported, loaded, a, args) for a in args.archs.split(",")},
    }
    text = json.dumps(report, indent=2)
    if args.json_out:
        Path(args.json_out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
