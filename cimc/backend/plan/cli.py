"""`python -m cimc.backend.plan.cli`: plan a transformer-shaped workload and print figures.

A stand-in for `cimc compile --print-ir-after map` until emission exists: it builds the
workload from dimensions (no model needed), plans it under each policy and prints one
JSON summary per policy (or the full plan text with --text).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from cimc.backend.plan.report import format_plan, plan_summary
from cimc.backend.plan.roofline import roofline
from cimc.backend.plan.streaming import POLICIES, plan_streaming
from cimc.backend.plan.target import load_target
from cimc.backend.plan.workload import TransformerDims, transformer_workload
from cimc.errors import CimcError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cimc.backend.plan.cli")
    parser.add_argument("--arch", default="default", help="preset name or TOML file")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--kv-heads", type=int, default=0)
    parser.add_argument("--intermediate", type=int, default=3072)
    parser.add_argument("--tokens", type=int, default=128, help="input vectors per inference")
    parser.add_argument("--context", type=int, default=0, help="attended positions (decode)")
    parser.add_argument("--gated", action="store_true", help="LLaMA-style gate/up/down MLP")
    parser.add_argument("--policy", choices=[*POLICIES, "auto", "all"], default="all")
    parser.add_argument("--source", choices=["dram", "flash"], default="dram")
    parser.add_argument("--duplicate", action="store_true")
    parser.add_argument("--fill", action="store_true", help="split columns to fill phases")
    parser.add_argument("--text", action="store_true", help="print the plan text instead")
    args = parser.parse_args(argv)
    try:
        target = load_target(args.arch)
        dims = TransformerDims(
            args.layers, args.hidden, args.heads, args.intermediate, args.tokens,
            args.kv_heads, args.context, args.gated,
        )  # fmt: skip
        work = transformer_workload(dims)
        policies = POLICIES if args.policy == "all" else (args.policy,)
        for policy in policies:
            start = time.perf_counter()
            plan = plan_streaming(
                work, target, policy, args.source, duplicate=args.duplicate, fill=args.fill
            )
            seconds = time.perf_counter() - start
            if args.text:
                sys.stdout.write(format_plan(plan))
                continue
            summary = plan_summary(plan, work, target)
            line = roofline(plan, work, target)
            intensity = line.ops_per_byte
            summary["ops_per_streamed_byte"] = round(intensity, 3) if line.streamed_bytes else None
            summary["ridge_ops_per_byte"] = round(line.ridge_ops_per_byte, 3)
            summary["split_columns"] = plan.split_columns
            summary["plan_seconds"] = round(seconds, 3)
            print(json.dumps(summary))
    except CimcError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
