"""`cimc generate`: greedy decoding with prefill and decode programs and a KV cache, every
step's logits checked bit for bit against the integer golden."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cimc.commands import EXIT_STATUS_CHECKED, add_command, tables
from cimc.commands.compile import add_sparsity_option
from cimc.commands.json_output import add_json_option, print_json
from cimc.errors import CimcError
from cimc.machine.arch import load_arch
from cimc.progress import add_quiet_option

if TYPE_CHECKING:  # torch comes with the pipeline: imported only when the command runs
    from cimc.decode.generate import GenerateResult
    from cimc.decode.policies import PolicyRow
    from cimc.decode.programs import DecoderPrograms
    from cimc.decode.report import TokenCost

NAME = "generate"
HELP = "greedy decoding (prefill + decode programs with a KV cache), bit-exact at every step"
EPILOG = """\
example:
  cimc example gpt2-tiny -o models/
  cimc generate models/gpt2-tiny.onnx --prompt-ids 1,2,3,4,5 --max-new-tokens 9 --arch tiny
  cimc generate models/llama-tiny.onnx --prompt-ids 7,8,9 --max-new-tokens 4 -o out/ --json
  cimc example opt-relu-tiny -o models/
  cimc generate models/opt-relu-tiny.onnx --prompt-ids 1,2,3 --sparsity exact --arch tiny

The model (an export with a symbolic sequence axis) is quantized once at a capacity of
--max-positions positions (default: prompt + new tokens) and compiled into two programs
sharing one constants file: prefill (the prompt) and decode (one token at a run-time
position); the KV cache is a `.state` declaration carried from run to run. Macros that
hold the same weights all run are declared `.persist`: decode steps after the first skip
their loads (decode-warm); --compare-policies prices every --streaming policy that way. N new tokens
take one prefill and N-1 decode steps. The interpreter and the integer golden (which runs
the whole prefix without any cache) generate side by side; the float model's greedy token
on the same prefix gives the agreement rate. Per-token figures come from the cost model.
With --sparsity exact the down-projections after ReLU-like activations load only the
weight rows of the neurons that are non-zero (bit-identical); every step is then priced
from its own run (the per-program lines under the table price every row), and --json
gives each step its cost (same keys as the programs') and the active share of each sparse
layer (active_fraction).
Exit status: 0 when every logit of every step is bit-exact, 1 on a mismatch, 2 on bad
input (ids outside the vocabulary, positions beyond the capacity, non-decoder models).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, NAME, HELP, EPILOG, EXIT_STATUS_CHECKED)
    p.add_argument("model", metavar="MODEL", help="decoder model: .onnx or .pt2 (torch.export)")
    p.add_argument("--prompt-ids", required=True, metavar="I,J,...", help="prompt token ids")
    p.add_argument(
        "--max-new-tokens", type=int, default=8, metavar="N", help="tokens to generate (default 8)"
    )
    p.add_argument(
        "--arch",
        metavar="PRESET|FILE.toml",
        default="default",
        help="architecture preset or TOML file (default: default)",
    )
    p.add_argument(
        "--max-positions",
        type=int,
        metavar="C",
        help="KV-cache capacity in positions (default: prompt + new tokens)",
    )
    p.add_argument(
        "--streaming",
        default="auto",
        choices=("auto", "sequential", "double-buffer", "pin-what-fits"),
        help="weight streaming policy of the programs (default: auto)",
    )
    p.add_argument(
        "--no-keep-weights",
        action="store_true",
        help="reload every weight at every decode step (no .persist macros)",
    )
    p.add_argument(
        "--compare-policies",
        action="store_true",
        help="also compile decode under every streaming policy and compare per-token costs",
    )
    add_sparsity_option(p)
    p.add_argument("--calibration", metavar="FILE.npz", help="calibration inputs (np.savez)")
    p.add_argument("--no-float", action="store_true", help="skip the float model comparison")
    p.add_argument("-o", "--output", metavar="DIR", help="write both programs and constants")
    add_json_option(p)
    add_quiet_option(p)
    p.set_defaults(handler=run)


def parse_ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CimcError(
            f"{text!r} is not a comma-separated list of integers", "--prompt-ids"
        ) from None
    if not ids:
        raise CimcError("give at least one prompt token id", "--prompt-ids")
    return ids


def run(args: argparse.Namespace) -> int:
    from cimc.decode.generate import generate
    from cimc.decode.programs import build_decoder, write_programs
    from cimc.decode.report import token_cost
    from cimc.pipeline import PipelineOptions

    prompt = parse_ids(args.prompt_ids)
    if args.max_new_tokens < 1:
        raise CimcError("must be at least 1", "--max-new-tokens")
    capacity = args.max_positions or len(prompt) + args.max_new_tokens
    if capacity < len(prompt) + args.max_new_tokens - 1:
        raise CimcError(
            f"{capacity} positions cannot hold {len(prompt)} prompt and "
            f"{args.max_new_tokens} new tokens",
            "--max-positions",
        )
    if not Path(args.model).is_file():
        raise CimcError("model file not found", args.model)
    arch = load_arch(args.arch)
    options = PipelineOptions(calibration=args.calibration, sparsity=args.sparsity)
    progs = build_decoder(
        args.model,
        arch,
        len(prompt),
        capacity,
        options,
        streaming=args.streaming,
        keep_weights=not args.no_keep_weights,
    )
    result = generate(progs, prompt, args.max_new_tokens, with_float=not args.no_float)
    costs = [
        token_cost(progs.prefill, "prefill", len(prompt)),
        token_cost(progs.decode, "decode", 1),
    ]
    if progs.warm is not None:
        costs.append(token_cost(progs.decode, "decode-warm", 1, progs.warm.warm))
    policies: tuple[PolicyRow, ...] = ()
    if args.compare_policies:
        from cimc.decode.policies import compare_policies

        policies = compare_policies(progs.model, arch, len(prompt))
    written = None
    if args.output:
        written = write_programs(progs, Path(args.output), Path(args.model).stem)
    steps = step_costs(progs, result, costs)
    if args.json:
        report = _json(result, costs, capacity, written, steps)
        report["policies"] = [row.as_json() for row in policies]
        print_json(NAME, report)
    else:
        _print(result, costs, capacity, written, steps)
        for row in policies:
            print(row.line())
    exact = result.bit_exact and all(row.bit_exact is not False for row in policies)
    return 0 if exact else 1


def step_costs(
    progs: DecoderPrograms, result: GenerateResult, costs: list[TokenCost]
) -> list[StepCost]:
    """Each step's cost: its program's, or, when the programs load data-dependent rows
    (sparse layers), priced from the step's own run, with its layers' active fractions."""
    from cimc.decode.active import active_fractions
    from cimc.decode.report import token_cost
    from cimc.machine.opcodes import DYNAMIC

    by_program = {c.program: c for c in costs}
    out = []
    for step, dynamic in zip(result.steps, result.runs, strict=True):
        compiled = progs.prefill if step.index == 0 else progs.decode
        program = compiled.program if step.index == 0 else progs.decode_program(step.index)
        if not any(i.opcode in DYNAMIC for s in program.cores for i in s.instrs):
            out.append(StepCost(by_program[step.program], {}))
            continue
        rows = by_program[step.program].rows
        cost = token_cost(compiled, step.program, rows, program, dynamic)
        out.append(StepCost(cost, active_fractions(compiled, program, dynamic)))
    return out


@dataclass(frozen=True)
class StepCost:
    cost: TokenCost
    active: dict[str, float]  # sparse layer -> share of its weight rows the step loaded


def _json(
    result: GenerateResult,
    costs: list[TokenCost],
    capacity: int,
    written: tuple | None,
    steps: list[StepCost],
) -> dict:
    return {
        "prompt": list(result.prompt),
        "tokens": list(result.tokens),
        "golden_tokens": list(result.golden_tokens),
        "bit_exact": result.bit_exact,
        "float_agreement": result.float_agreement,
        "capacity": capacity,
        "steps": [
            {**s.__dict__, "cost": c.cost.as_json(), "active_fraction": c.active}
            for s, c in zip(result.steps, steps, strict=True)
        ],
        "cost": {c.program: c.as_json() for c in costs},
        "written": [str(p) for p in written] if written else None,
    }


def _print(
    result: GenerateResult,
    costs: list[TokenCost],
    capacity: int,
    written: tuple | None,
    steps: list[StepCost],
) -> None:
    from rich.table import Table

    console = tables.console()
    table = Table(title=f"greedy generation, KV-cache capacity {capacity}")
    heads: tuple[str, ...] = (
        "step",
        "program",
        "position",
        "token",
        "golden",
        "float",
        "logits vs golden",
    )
    heads += ("cycles", "energy uJ", "weight bytes", "active")
    for head in heads:
        table.add_column(head, justify="right")
    for s, sc in zip(result.steps, steps, strict=True):
        c = sc.cost
        active = ", ".join(f"{v:.0%}" for v in sc.active.values()) or "-"
        table.add_row(
            str(s.index),
            s.program,
            str(s.position),
            str(s.token),
            str(s.golden_token),
            "-" if s.float_token is None else str(s.float_token),
            "bit-exact" if s.mismatched == 0 else f"{s.mismatched} differ",
            f"{c.cycles:,}",
            f"{c.energy_uj:.3f}",
            f"{c.weight_bytes_loaded:,}",
            active,
        )
    console.print(table)
    for c in costs:
        console.print(cost_line(c), markup=False)
    console.print(f"tokens: {' '.join(map(str, result.tokens))}", markup=False)
    if result.float_agreement is not None:
        console.print(f"float model agreement: {result.float_agreement:.0%} of steps")
    if written:
        console.print(f"wrote {', '.join(map(str, written))}", markup=False)
    if result.bit_exact:
        console.print("bit-exact: every logit of every step equals the integer golden")
    else:
        console.print("MISMATCH: the interpreter's logits differ from the integer golden")


def cost_line(c: TokenCost) -> str:
    per = f" ({c.rows} tokens, one run)" if c.rows > 1 else " per token"
    bound = "memory" if c.memory_bound else "compute"
    return (
        f"{c.program} on '{c.arch}'{per}: {c.cycles:,} cycles ({c.time_us:.1f} us), "
        f"{c.energy_uj:.3f} uJ, {c.weight_bytes_loaded:,} weight bytes loaded, "
        f"{c.offchip_bytes:,} off-chip bytes; load {c.load_cycles:,} cycles, "
        f"{c.hidden_load_cycles:,} hidden behind compute; roofline {c.ops_per_byte:.2f} "
        f"ops/byte vs ridge {c.ridge_ops_per_byte:.0f} ({bound}-bound), achieved "
        f"{c.achieved_ops_per_cycle:.1f} of {c.attainable_ops_per_cycle:.1f} attainable "
        f"ops/cycle; {c.bound_ratio:.2f}x the streaming bound "
        f"({c.streaming_bound_cycles:,} cycles = weights / bandwidth; "
        f"{c.loaded_bound_cycles:,} for the weights this run loads); "
        f"{c.flash_bytes:,} flash bytes, {c.dram_bytes:,} dram bytes read, dram footprint "
        f"{c.dram_footprint_bytes:,} of {c.dram_capacity_bytes:,} bytes{_flash_bound(c)}"
    )


def _flash_bound(c: TokenCost) -> str:
    if not c.flash_bound_cycles:
        return ""
    return f"; {c.flash_bound_ratio:.2f}x the flash bound ({c.flash_bound_cycles:,} cycles)"
