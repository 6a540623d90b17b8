"""int8 vs int4 weights, per-channel vs group-wise scales: accuracy against the float model
and weight bytes, every program checked bit-exact against its integer golden.

    python benchmarks/weight_bits.py --models /tmp/zoo --arch default --groups 32,128

For each zoo model (`FAMILY-tiny-dynamo.onnx` in --models, as program_snapshot.py exports
them) and each configuration (W8A8; W4A8 per channel; W4A8 with each group size), compiles
at --seq-len, runs interpreter and golden on the same generated inputs, and prints the
cosine similarity and max |error| of the dequantized outputs vs the float model, the weight
bytes loaded by one run and its ratio to int8. Exit 1 when a program is not bit-exact.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FAMILIES = ("bert", "gpt2", "llama")


def configs(groups: list[int]) -> list[tuple[str, dict[str, object]]]:
    out: list[tuple[str, dict[str, object]]] = [
        ("W8A8", {}),
        ("W4A8 per-channel", {"weight_bits": 4}),
    ]
    out += [(f"W4A8 group {g}", {"weight_bits": 4, "weight_group": g}) for g in groups]
    return out


def main() -> int:
    from cimc.machine.arch import load_arch
    from cimc.pipeline import PipelineOptions, compile_model
    from cimc.reference.float_model import default_inputs
    from cimc.verify import verify_compiled, weight_bytes_loaded

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, default=Path("/tmp/zoo"))
    p.add_argument("--arch", default="default")
    p.add_argument("--seq-len", type=int, default=16)
    p.add_argument("--groups", default="32,128", help="group sizes (comma-separated)")
    args = p.parse_args()
    arch = load_arch(args.arch)
    groups = [int(g) for g in args.groups.split(",") if g]
    print(
        "| model | weights | cosine vs float | max abs error | weight bytes | vs int8 | bit-exact |"
    )
    print("|---|---|---|---|---|---|---|")
    exact = True
    for family in FAMILIES:
        model = args.models / f"{family}-tiny-dynamo.onnx"
        base = None
        for label, weights in configs(groups):
            options = PipelineOptions(seq_len=args.seq_len, **weights)  # type: ignore[arg-type]
            result = compile_model(str(model), arch, options)
            inputs = default_inputs(result.float_graph, seed=0)
            report = verify_compiled(
                result.compiled, result.float_graph, inputs, with_figures=False
            )
            loaded = weight_bytes_loaded(result.compiled.program)
            base = base or loaded
            err = max(o.max_abs_error for o in report.outputs)
            exact = exact and report.bit_exact
            print(
                f"| {family} | {label} | {report.cosine_vs_float:.4f} | {err:.4f} | "
                f"{loaded:,} | {loaded / base:.2f} | {report.bit_exact} |",
                flush=True,
            )
    return 0 if exact else 1


if __name__ == "__main__":
    raise SystemExit(main())
