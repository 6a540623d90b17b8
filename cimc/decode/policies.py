"""Weight streaming policies for decode, side by side.

The decode program is compiled once per policy of the backend's planner
(cimc/backend/plan/streaming.py: sequential, double-buffer, pin-what-fits; `auto` picks by
estimate) and priced by the cost model, twice:
- *cold*: the first decode step, every weight loaded (the macros start empty); policies
  differ in how much of the load time hides behind compute (prefetch into the other bank);
- *warm*: every later step, where the macros that the policy fills once keep their weights
  from the previous token (`.persist`, cimc/decode/warm.py) and only the rest streams.
The planner's own steady-state estimate (bytes per token with the pinned bank resident)
is listed beside them. Each policy's programs are also run: prefill, the cold step and
`verify_steps - 1` warm steps, every logit against the integer golden.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from cimc.backend.plan.streaming import POLICIES, Policy
from cimc.decode.generate import generate
from cimc.decode.programs import (
    DecoderModel,
    DecoderPrograms,
    compile_decoder_graph,
    merge_consts,
    shared_reserve,
)
from cimc.decode.report import TokenCost, token_cost
from cimc.decode.specialize import specialize
from cimc.decode.warm import warm_decode
from cimc.machine.arch import Arch

CHOICES: tuple[Policy, ...] = (*POLICIES, "auto")


@dataclass(frozen=True)
class PolicyRow:
    policy: str
    cold: TokenCost  # first decode step: every weight loaded
    warm: TokenCost  # later steps: kept macros not reloaded (= cold when none is kept)
    kept_macros: int
    planned_bytes_per_token: int  # planner: pinned bank resident across tokens
    phases: int
    bit_exact: bool | None  # prefill + decode steps vs the golden (None: not checked)

    def line(self) -> str:
        c, w = self.cold, self.warm
        exact = {True: "bit-exact", False: "MISMATCH", None: "not checked"}[self.bit_exact]
        return (
            f"{self.policy:>13}: first token {c.cycles:,} cycles, {c.weight_bytes_loaded:,} "
            f"weight bytes ({c.hidden_load_cycles:,} of {c.load_cycles:,} load cycles hidden); "
            f"next tokens {w.cycles:,} cycles ({w.bound_ratio:.2f}x the streaming bound), "
            f"{w.energy_uj:.3f} uJ, {w.weight_bytes_loaded:,} weight bytes, {self.kept_macros} "
            f"macros kept; planner {self.planned_bytes_per_token:,} bytes/token, "
            f"{self.phases} phases; {exact}"
        )

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["cold"], out["warm"] = self.cold.as_json(), self.warm.as_json()
        return out


def compare_policies(
    dm: DecoderModel,
    arch: Arch,
    prompt_len: int,
    policies: tuple[Policy, ...] = CHOICES,
    verify_steps: int = 2,
) -> tuple[PolicyRow, ...]:
    """One row per policy: the decode program compiled with it, priced and checked."""
    decode_graph = specialize(dm.qgraph, dm.axes, 1)
    prefill_graph = specialize(dm.qgraph, dm.axes, prompt_len)
    reserve = shared_reserve((prefill_graph, decode_graph), arch)
    rows = []
    for policy in policies:
        decode = compile_decoder_graph(
            decode_graph, arch, "model.decode", streaming=policy, dram_reserve=reserve
        )
        # prefill with decode's plan, so both store the weight images alike
        chosen = decode.stream.policy if decode.stream is not None else policy
        prefill = compile_decoder_graph(
            prefill_graph, arch, "model.prefill", streaming=chosen, dram_reserve=reserve
        )
        warm = warm_decode(decode.program)
        consts = merge_consts(prefill.consts, decode.consts)
        progs = DecoderPrograms(dm, prefill, decode, consts, warm)
        exact = None
        if verify_steps:
            prompt = [(5 * i + 1) % dm.vocab for i in range(prompt_len)]
            steps = min(verify_steps, dm.capacity - prompt_len) + 1
            exact = generate(progs, prompt, steps, with_float=False).bit_exact
        plan, cold = decode.stream, token_cost(decode, "decode", 1)
        rows.append(
            PolicyRow(
                policy=policy if policy != "auto" or plan is None else f"auto={plan.policy}",
                cold=cold,
                warm=token_cost(decode, "decode-warm", 1, warm.warm) if warm else cold,
                kept_macros=len(warm.kept) if warm else 0,
                planned_bytes_per_token=plan.bytes_per_inference if plan else cold.weight_bytes,
                phases=len(plan.phases) if plan else 0,
                bit_exact=exact,
            )
        )
    return tuple(rows)
