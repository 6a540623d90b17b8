"""Decoding a model larger than DRAM: per-token cost against DRAM size, the naive plan and
the flash bound (the table of "LLM in a flash", section 5, for cimc's memory plan).

    python benchmarks/flash_bench.py                                  # LLaMA 4 x 512 on default
    python benchmarks/flash_bench.py --layers 2 --hidden 256 --fractions 0.125,0.5

A random-weight LLaMA-style decoder (GQA, RoPE, SiLU MLP) is compiled into prefill and
decode programs on the `--arch` preset with `memory.dram_bytes` set to each fraction of
the model's int8 weight bytes, plus the DRAM the rest of the program needs (activations,
KV cache, small constants: the memory planner's own estimate, cimc/backend/builder/
footprint.py). Per fraction, the steady-state decode step (the warm program when macros
keep weights between tokens) is priced by the cost model: cycles and ms at the arch clock,
flash and DRAM bytes per token, energy per token, the flash bound (flash bytes / flash
bandwidth) and the ratio to it. The naive plan reloads every weight from flash every token
(no DRAM cache, no weights kept in the macros). With --verify-steps N (default 2) each
fraction's programs also generate N tokens in the interpreter against the integer golden.
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


def build(args: argparse.Namespace) -> Any:
    from cimc.zoo import build_model, example_inputs
    from cimc.zoo.export import export_torch

    model = build_model(
        "llama",
        head="lm",
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=max(1, args.hidden // 256),
        vocab_size=args.vocab,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_torch(model, example_inputs(model, seq_len=8), dynamic=True)


def with_dram(arch: Any, dram: int) -> Any:
    dram = -(-dram // 64) * 64
    return replace(
        arch, name=f"{arch.name}-dram{dram}", memory=replace(arch.memory, dram_bytes=dram)
    )


def per_token(progs: Any) -> Any:
    """The steady-state decode step's cost: the warm program when weights stay."""
    from cimc.decode.report import token_cost

    if progs.warm is not None:
        return token_cost(progs.decode, "decode-warm", 1, progs.warm.warm)
    return token_cost(progs.decode, "decode", 1)


def row(label: str, progs: Any, arch: Any, exact: bool | None) -> dict:
    c = per_token(progs)
    return {
        "plan": label,
        "dram_bytes_arch": arch.memory.dram_bytes,
        "cycles": c.cycles,
        "ms": c.cycles / arch.chip.clock_mhz / 1000,
        "flash_bytes": c.flash_bytes,
        "dram_bytes": c.dram_bytes,
        "dram_footprint_bytes": c.dram_footprint_bytes,
        "energy_uj": c.energy_uj,
        "flash_bound_cycles": c.flash_bound_cycles,
        "flash_bound_ratio": c.flash_bound_ratio,
        "bit_exact": exact,
    }


def compile_and_check(
    exported: Any, loaded: Any, arch: Any, args: argparse.Namespace, keep: bool
) -> tuple[Any, bool | None]:
    from cimc.decode.generate import generate
    from cimc.decode.programs import build_decoder

    progs = build_decoder(
        exported, arch, args.prompt, loaded.capacity, loaded=loaded, keep_weights=keep
    )
    exact = None
    if args.verify_steps:
        prompt = [(7 * i + 3) % args.vocab for i in range(args.prompt)]
        exact = generate(progs, prompt, args.verify_steps, with_float=False).bit_exact
    return progs, exact


def main() -> None:
    from cimc.decode.programs import load_decoder, shared_reserve
    from cimc.decode.report import model_weight_bytes
    from cimc.decode.specialize import specialize
    from cimc.machine.arch import load_arch

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--arch", default="default")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--intermediate", type=int, default=1408)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--prompt", type=int, default=4)
    p.add_argument("--fractions", default="0.125,0.25,0.5,0.75,1.0")
    p.add_argument("--verify-steps", type=int, default=2)
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    base = load_arch(args.arch)
    exported = build(args)
    started = time.perf_counter()
    loaded = load_decoder(exported, args.prompt + max(args.verify_steps, 2))
    graphs = [specialize(loaded.qgraph, loaded.axes, n) for n in (args.prompt, 1)]
    weights = model_weight_bytes(loaded.qgraph)
    other = shared_reserve(graphs, base)
    rows = []
    naive_arch = with_dram(base, other)  # no DRAM left for weights or tables
    progs, exact = compile_and_check(exported, loaded, naive_arch, args, keep=False)
    naive = row("naive: every weight from flash every token", progs, naive_arch, exact)
    for fraction in (float(f) for f in args.fractions.split(",")):
        arch = with_dram(base, other + int(fraction * weights))
        progs, exact = compile_and_check(exported, loaded, arch, args, keep=True)
        rows.append(row(f"DRAM = {fraction:g} x weights", progs, arch, exact))
    elapsed = time.perf_counter() - started
    print(
        f"model: LLaMA {args.layers} x {args.hidden} (intermediate {args.intermediate}, vocab "
        f"{args.vocab}), {weights:,} int8 weight bytes; arch {args.arch} + {other:,} bytes of "
        f"DRAM for the rest; {elapsed:.0f} s"
    )
    print(
        "| plan | DRAM bytes | cycles/token | ms/token | flash B/token | DRAM B/token "
        "| uJ/token | flash bound | x bound | speedup vs naive | bit-exact |"
    )
    print("|" + "---|" * 11)
    for r in [naive, *rows]:
        print(_line(r, naive["cycles"] / r["cycles"]))
    report = {"weights": weights, "other_dram": other, "naive": naive, "rows": rows}
    print(json.dumps(report))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))


def _line(r: dict, speedup: float) -> str:
    cells = (
        r["plan"],
        f"{r['dram_bytes_arch']:,}",
        f"{r['cycles']:,}",
        f"{r['ms']:.3f}",
        f"{r['flash_bytes']:,}",
        f"{r['dram_bytes']:,}",
        f"{r['energy_uj']:.1f}",
        f"{r['flash_bound_cycles']:,}",
        f"{r['flash_bound_ratio']:.2f}",
        f"{speedup:.2f}x",
        str(r["bit_exact"]),
    )
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    main()
