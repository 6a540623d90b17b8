"""Mappings side by side (`--mapping spread|duplicate|pipeline|auto`): when does each win?

    python benchmarks/mapping_bench.py                   # bert/gpt2 tiny, batch 1 and 8
    python benchmarks/mapping_bench.py --models bert:odd --batches 8 --archs large --seq 32
    python benchmarks/mapping_bench.py --models bert:base --config num_hidden_layers=2 \
        --batches 8 --seq 32 --archs large --mappings spread,pipeline

Each model (a zoo family and preset, random weights) is compiled at every batch (token
rows = batch x seq) for every arch and mapping, verified bit for bit against the integer
golden (unless --no-verify), and priced by the cost model: the makespan of the program as
compiled (cold: every weight, and every copy's, written into the macros) and of its warm
variant (the steady state of repeated inferences: the macros that keep their weights are
not written again, cimc/decode/warm.py), tokens per cycle for both, energy of the cold
run, macros used, the copies the map pass made and the pipeline stages it kept (pipeline
lowers 2, 4 and 8 stages up to the cores and micro-batches and keeps the fastest; it needs
a batch of 2 or more, so at batch 1 its row is the one-line refusal). `auto` lowers every
candidate and keeps the smallest cold makespan, so its cold column must never exceed
spread's.
Prints a Markdown table and one JSON object (--json-out FILE writes it too).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MAPPINGS = ("spread", "duplicate", "pipeline", "auto")


def measure(
    family: str,
    preset: str,
    batch: int,
    seq: int,
    arch_name: str,
    verify: bool,
    mappings: tuple[str, ...] = MAPPINGS,
    config: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    from cimc.api import import_model
    from cimc.decode.warm import warm_decode
    from cimc.errors import CimcError
    from cimc.inspect.mapping import program_mapping
    from cimc.machine.arch import load_arch
    from cimc.machine.summary import summarize
    from cimc.pipeline import PipelineOptions, compile_model
    from cimc.verify import verify_compiled
    from cimc.zoo import build_model, example_inputs

    module = build_model(family, preset, **(config or {}))
    ids, mask = example_inputs(module, batch=batch, seq_len=seq)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = import_model(module, example_inputs=(ids, mask), canonicalize=False)
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    arch = load_arch(arch_name)
    tokens = batch * seq
    rows = []
    for mapping in mappings:
        row: dict[str, Any] = {
            "model": f"{family}:{preset}", "batch": batch, "tokens": tokens,
            "arch": arch_name, "mapping": mapping,
        }  # fmt: skip
        started = time.perf_counter()
        try:
            result = compile_model(graph.copy(), arch, PipelineOptions(mapping=mapping))
        except CimcError as e:
            rows.append({**row, "error": str(e)})
            continue
        row["compile_s"] = round(time.perf_counter() - started, 2)
        program = result.compiled.program
        cold = summarize(program, arch)
        warm = warm_decode(program)
        warm_cycles = summarize(warm.warm, arch).makespan_cycles if warm else cold.makespan_cycles
        chosen = program_mapping(program)
        row.update(
            ran=chosen.mapping,
            copies=sum(chosen.copies.values()) - len(chosen.copies),
            stages=len(chosen.stages) or "-",
            makespan_cycles=cold.makespan_cycles,
            tokens_per_cycle=tokens / cold.makespan_cycles,
            warm_cycles=warm_cycles,
            warm_tokens_per_cycle=tokens / warm_cycles,
            energy_uj=round(cold.energy_uj, 3),
            macros_used=cold.macros_used,
        )
        if verify:
            report = verify_compiled(result.compiled, result.float_graph, feeds, with_figures=False)
            row["bit_exact"] = report.bit_exact
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| model | batch | tokens | arch | mapping | ran | extra copies | stages | cold cycles | "
        "tokens/kcycle | warm cycles | warm tokens/kcycle | energy uJ | macros | bit-exact |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if "error" in r:
            cells = [r["model"], r["batch"], r["tokens"], r["arch"], r["mapping"], r["error"]]
            lines.append("| " + " | ".join(map(str, cells)) + " |" + " |" * 9)  # 15 columns
            continue
        cells = [
            r["model"], r["batch"], r["tokens"], r["arch"], r["mapping"], r["ran"], r["copies"],
            r["stages"], f"{r['makespan_cycles']:,}", f"{1000 * r['tokens_per_cycle']:.3f}",
            f"{r['warm_cycles']:,}", f"{1000 * r['warm_tokens_per_cycle']:.3f}",
            r["energy_uj"], r["macros_used"], r.get("bit_exact", "-"),
        ]  # fmt: skip
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="bert:tiny,gpt2:tiny", help="family:preset,...")
    p.add_argument("--batches", default="1,8", help="batch sizes")
    p.add_argument("--seq", type=int, default=16, help="tokens per sequence")
    p.add_argument("--archs", default="default,large", help="arch presets")
    p.add_argument("--mappings", default=",".join(MAPPINGS), help="mappings to compare")
    p.add_argument(
        "--config", action="append", default=[], metavar="KEY=N", help="model config override"
    )
    p.add_argument("--no-verify", action="store_true", help="skip the bit-exact check")
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    mappings = tuple(args.mappings.split(","))
    config = {k: int(v) for k, _, v in (c.partition("=") for c in args.config)}
    rows: list[dict[str, Any]] = []
    for model in args.models.split(","):
        family, _, preset = model.partition(":")
        for batch in (int(b) for b in args.batches.split(",")):
            for arch in args.archs.split(","):
                rows += measure(
                    family, preset or "tiny", batch, args.seq, arch, not args.no_verify,
                    mappings, config,
                )  # fmt: skip
                last = markdown(rows[-len(mappings) :]).splitlines()[2:]
                print("\n".join(last), file=sys.stderr, flush=True)
    print(markdown(rows))
    doc = {"seq": args.seq, "rows": rows}
    print(json.dumps(doc))
    if args.json_out:
        args.json_out.write_text(json.dumps(doc, indent=1) + "\n")
    bad = [r for r in rows if r.get("bit_exact") is False]
    worse = [
        (a, s)
        for a in rows
        for s in rows
        if a["mapping"] == "auto" and s["mapping"] == "spread" and "error" not in a
        and (a["model"], a["batch"], a["arch"]) == (s["model"], s["batch"], s["arch"])
        and a["makespan_cycles"] > s["makespan_cycles"]
    ]  # fmt: skip
    return 1 if bad or worse else 0


if __name__ == "__main__":
    sys.exit(main())
