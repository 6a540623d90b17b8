"""`cimc generate`: greedy decoding with prefill and decode programs and a KV cache, every
step's logits checked bit for bit against the integer golden."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cimc.commands import EXIT_STATUS_CHECKED, add_command, tables
from cimc.commands.compile import (
    add_mapping_option,
    add_sparsity_option,
    add_weight_options,
    checked_window,
    weight_options,
)
from cimc.commands.json_output import add_json_option, print_json
from cimc.errors import CimcError
from cimc.machine.arch import load_arch
from cimc.progress import add_quiet_option

if TYPE_CHECKING:  # torch comes with the pipeline: imported only when the command runs
    from cimc.decode.generate import BatchResult, GenerateResult, Run
    from cimc.decode.policies import PolicyRow
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
  cimc generate models/gpt2-tiny.onnx --prompt-ids 1,2,3 --prompt-ids 4 --prompt-ids 5,6 --arch tiny

The model (an export with a symbolic sequence axis) is quantized once at a capacity of
--max-positions positions (default: prompt + new tokens) and compiled into two programs
sharing one constants file: prefill (the prompt) and decode (one token at a run-time
position); the KV cache is a `.state` declaration carried from run to run. Macros that
hold the same weights all run are declared `.persist`: decode steps after the first skip
their loads (decode-warm); --compare-policies prices every --streaming policy that way. N new tokens
take one prefill and N-1 decode steps. Several --prompt-ids run a batch: one sequence
each (prompts of any lengths), every program run computes a row per sequence and loads
each weight once for all of them, each sequence has its own KV cache. A decode step
attends over the filled positions rounded up to --attention-block (one decode program
per window, compiled when first needed). The interpreter and the integer golden (which runs
the whole prefix without any cache) generate side by side; the float model's greedy token
on the same prefix gives the agreement rate. Per-token figures come from the cost model.
With --sparsity exact the down-projections after ReLU-like activations load only the
weight rows of the neurons that are non-zero (bit-identical); every run is then priced
from its own record of the rows it loaded, and --json gives each step its run's cost
(same keys as the programs') and the active share of each sparse layer (active_fraction).
With --sparsity predict a low-rank predictor before each FFN also skips the up-projection
columns of the neurons it predicts inactive (the golden applies it too: an approximation
of the float model, bit-exact against the golden); --json adds per step the share of
neurons each masked layer loaded (predicted_fraction) and the predictor's recall of the
truly active ones (predictor_recall).
Exit status: 0 when every logit of every step is bit-exact, 1 on a mismatch, 2 on bad
input (ids outside the vocabulary, positions beyond the capacity, non-decoder models).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, NAME, HELP, EPILOG, EXIT_STATUS_CHECKED)
    p.add_argument("model", metavar="MODEL", help="decoder model: .onnx or .pt2 (torch.export)")
    p.add_argument(
        "--prompt-ids",
        required=True,
        action="append",
        metavar="I,J,...",
        help="prompt token ids; repeat it for a batch (one sequence per flag)",
    )
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
        help="KV-cache capacity in positions (default: longest prompt + new tokens)",
    )
    p.add_argument(
        "--attention-block",
        type=int,
        default=32,
        metavar="N",
        help="decode attends over the filled positions rounded up to N (0: the whole "
        "capacity; default 32)",
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
    add_mapping_option(p, "; decode programs take auto instead of duplicate", pipeline=False)
    add_sparsity_option(p)
    p.add_argument("--calibration", metavar="FILE.npz", help="calibration inputs (np.savez)")
    add_weight_options(p)
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
    from cimc.decode.generate import generate_batch
    from cimc.decode.programs import build_decoder, write_programs
    from cimc.decode.variants import check_block
    from cimc.pipeline import PipelineOptions

    prompts = [parse_ids(text) for text in args.prompt_ids]
    longest = max(len(p) for p in prompts)
    if args.max_new_tokens < 1:
        raise CimcError("must be at least 1", "--max-new-tokens")
    capacity = args.max_positions or longest + args.max_new_tokens
    if capacity < longest + args.max_new_tokens - 1:
        raise CimcError(
            f"{capacity} positions cannot hold {longest} prompt and "
            f"{args.max_new_tokens} new tokens",
            "--max-positions",
        )
    if not Path(args.model).is_file():
        raise CimcError("model file not found", args.model)
    arch = load_arch(args.arch)
    options = PipelineOptions(
        calibration=args.calibration,
        mapping=args.mapping,
        sparsity=args.sparsity,
        window=checked_window(args),
        **weight_options(args),  # type: ignore[arg-type]
    )
    progs = build_decoder(
        args.model,
        arch,
        [len(p) for p in prompts],
        capacity,
        options,
        streaming=args.streaming,
        keep_weights=not args.no_keep_weights,
        block=check_block(args.attention_block),
    )
    result = generate_batch(progs, prompts, args.max_new_tokens, with_float=not args.no_float)
    costs = run_costs(result)
    policies: tuple[PolicyRow, ...] = ()
    if args.compare_policies:
        from cimc.decode.policies import compare_policies

        policies = compare_policies(progs.model, arch, len(prompts[0]))
    written = None
    if args.output:
        written = write_programs(progs, Path(args.output), Path(args.model).stem)
    if args.json:
        report = _json(result, costs, capacity, written)
        report["policies"] = [row.as_json() for row in policies]
        print_json(NAME, report)
    else:
        _print(result, costs, capacity, written)
        for row in policies:
            print(row.line())
    exact = result.bit_exact and all(row.bit_exact is not False for row in policies)
    return 0 if exact else 1


@dataclass(frozen=True)
class RunCost:
    cost: TokenCost
    active: dict[str, float]  # sparse layer -> share of its weight rows the run loaded
    # windowed layer -> share of its rows the run copied from flash into its DRAM cache
    copied: dict[str, float] = field(default_factory=dict)
    # masked layer -> share of its neurons whose columns the run loaded (--sparsity predict)
    predicted: dict[str, float] = field(default_factory=dict)


def run_costs(result: BatchResult) -> list[RunCost]:
    """The cost of every step's run. A program run more than once is priced once, unless
    it loads data-dependent rows (sparse layers): each such run is priced from its own
    record of what it loaded, with its layers' active fractions."""
    from cimc.decode.active import active_fractions, copied_fractions, predicted_fractions
    from cimc.decode.report import token_cost

    priced: dict[int, TokenCost] = {}
    out = []
    for run in result.runs:
        rows = batch_rows(run)
        if run.dynamic:
            cost = token_cost(run.compiled, run.name, rows, run.program, run.dynamic)
            active = active_fractions(run.compiled, run.program, run.dynamic)
            copied = copied_fractions(run.compiled, run.program, run.dynamic)
            predicted = predicted_fractions(run.compiled, run.program, run.dynamic)
            out.append(RunCost(cost, active, copied, predicted))
            continue
        if id(run.program) not in priced:
            priced[id(run.program)] = token_cost(run.compiled, run.name, rows, run.program)
        out.append(RunCost(priced[id(run.program)], {}))
    return out


def batch_rows(run: Run) -> int:
    from cimc.decode.programs import batch_shape

    return batch_shape(run.compiled.graph).rows


def summary_costs(result: BatchResult, costs: list[RunCost]) -> dict[str, TokenCost]:
    """prefill, the first decode step (every weight loaded: "decode") and the last warm
    step ("decode-warm": the steady state, at the largest window reached)."""
    out: dict[str, TokenCost] = {}
    for run, c in zip(result.runs, costs, strict=True):
        if run.name == "decode-warm" or run.name not in out:
            out[run.name] = c.cost
    return out


def _window_json(cost: RunCost) -> dict:
    """The rows the run's windowed layers copied from flash (--window: present then only)."""
    return {"window_copied_fraction": cost.copied} if cost.copied else {}


def _predicted_json(cost: RunCost) -> dict:
    """The neurons the run's masked layers loaded (--sparsity predict: present then only)."""
    return {"predicted_fraction": cost.predicted} if cost.predicted else {}


def _sequence_json(seq: GenerateResult, costs: list[RunCost]) -> dict:
    """A sequence's steps, each with its run's cost (the keys of the programs' costs) and
    the active share of each sparse layer (empty when there is none)."""
    steps = [
        {
            **s.__dict__,
            "cost": costs[s.index].cost.as_json(),
            "active_fraction": costs[s.index].active,
            **_window_json(costs[s.index]),
            **_predicted_json(costs[s.index]),
        }
        for s in seq.steps
    ]
    return {
        "prompt": list(seq.prompt),
        "tokens": list(seq.tokens),
        "golden_tokens": list(seq.golden_tokens),
        "bit_exact": seq.bit_exact,
        "float_agreement": seq.float_agreement,
        "steps": steps,
    }


def _json(result: BatchResult, costs: list[RunCost], capacity: int, written: tuple | None) -> dict:
    """One object; with one prompt its sequence's fields are at the top level too."""
    sequences = [_sequence_json(seq, costs) for seq in result.sequences]
    runs = [
        {"index": r.index, "program": r.name, "windows": list(r.windows), **_run_figures(c.cost)}
        for r, c in zip(result.runs, costs, strict=True)
    ]
    report: dict = sequences[0] if len(sequences) == 1 else {}
    report.update(
        {
            "batch": len(sequences),
            "bit_exact": result.bit_exact,
            "capacity": capacity,
            "sequences": [dict(s) for s in sequences],
            "runs": runs,
            "cost": {name: c.as_json() for name, c in summary_costs(result, costs).items()},
            "written": [str(p) for p in written] if written else None,
        }
    )
    return report


def _run_figures(c: TokenCost) -> dict:
    return {
        "makespan_cycles": c.cycles,
        "energy_uj": c.energy_uj,
        "weight_bytes_loaded": c.weight_bytes_loaded,
        "weight_bytes_per_token": c.weight_bytes_per_token,
        "tokens_per_second": c.tokens_per_second,
    }


def _print(result: BatchResult, costs: list[RunCost], capacity: int, written: tuple | None) -> None:
    from rich.table import Table

    console = tables.console()
    batch = len(result.sequences)
    title = f"greedy generation, KV-cache capacity {capacity}"
    table = Table(title=title if batch == 1 else f"{title}, {batch} sequences")
    heads: tuple[str, ...] = ("step", "program", "window", "position", "token", "golden")
    heads += ("float", "logits vs golden", "cycles", "energy uJ", "weight bytes", "active")
    for head in heads:
        table.add_column(head, justify="right")
    for run, rc in zip(result.runs, costs, strict=True):
        c = rc.cost
        active = ", ".join(f"{v:.0%}" for v in rc.active.values()) or "-"
        steps = [seq.steps[run.index] for seq in result.sequences]
        bad = sum(s.mismatched for s in steps)
        table.add_row(
            str(run.index),
            run.name,
            _join(s.window for s in steps),
            _join(s.position for s in steps),
            _join(s.token for s in steps),
            _join(s.golden_token for s in steps),
            _join("-" if s.float_token is None else s.float_token for s in steps),
            "bit-exact" if bad == 0 else f"{bad} differ",
            f"{c.cycles:,}",
            f"{c.energy_uj:.3f}",
            f"{c.weight_bytes_loaded:,}",
            active,
        )
    console.print(table)
    for c in summary_costs(result, costs).values():
        console.print(cost_line(c), markup=False)
    for seq in result.sequences:
        console.print(f"tokens: {' '.join(map(str, seq.tokens))}", markup=False)
        if seq.float_agreement is not None:
            console.print(f"float model agreement: {seq.float_agreement:.0%} of steps")
    if written:
        console.print(f"wrote {', '.join(map(str, written))}", markup=False)
    if result.bit_exact:
        console.print("bit-exact: every logit of every step equals the integer golden")
    else:
        console.print("MISMATCH: the interpreter's logits differ from the integer golden")


def _join(values: Iterable[object]) -> str:
    return " ".join(map(str, values))


def cost_line(c: TokenCost) -> str:
    per = f" ({c.rows} tokens, one run)" if c.rows > 1 else " per token"
    batch = (
        f"; per token: {c.weight_bytes_per_token:,.0f} weight bytes, "
        f"{c.energy_per_token_uj:.3f} uJ, {c.tokens_per_second:,.0f} tokens/s"
        if c.rows > 1
        else f"; {c.tokens_per_second:,.0f} tokens/s"
    )
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
        f"{batch}"
    )


def _flash_bound(c: TokenCost) -> str:
    if not c.flash_bound_cycles:
        return ""
    return f"; {c.flash_bound_ratio:.2f}x the flash bound ({c.flash_bound_cycles:,} cycles)"
