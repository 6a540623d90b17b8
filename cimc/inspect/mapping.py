"""Which mapping a program was compiled with, read back from the program itself.

A duplicated program says so in its header (cimc/backend/plan/duplication.py,
`mapping_note`): the copies of each layer and the cores each copy runs on. A pipelined one
names its micro-batches and each stage's cores and nodes (cimc/backend/plan/pipeline.py,
`PipelinePlan.note`). A program without those lines was spread (each layer once): spread
programs carry no note, so their text is what it was before mappings existed. Throughput
needs the tokens one run processes: the rows the linear layers see, from the model's
inputs as the constants file records them (token ids: every id is a token; a float
input: every vector of its last axis).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from cimc.backend.builder.saved import GraphInput, bindings_of
from cimc.backend.plan.duplication import NOTE
from cimc.machine.consts_file import existing_consts_path
from cimc.machine.mapped_consts import MappedConsts
from cimc.machine.program import Comment, Program

_LAYER = re.compile(rf"^{NOTE} %(\S+): (\d+) copies on cores (.+)$")
_PIPE = re.compile(rf"^{NOTE} pipeline: (\d+) stages, (\d+) micro-batches of \d+ \(batch \d+\)$")
_STAGE = re.compile(rf"^{NOTE} stage (\d+) on cores (\S+): %(\S+) \.\. %(\S+) \(\d+ nodes\)$")


@dataclass(frozen=True)
class StageNote:
    """One pipeline stage as the header names it: its cores and first and last node."""

    cores: list[int]
    first: str
    last: str


@dataclass(frozen=True)
class ProgramMapping:
    mapping: str  # spread, duplicate or pipeline
    copies: dict[str, int]  # duplicated layers only
    core_groups: dict[str, list[list[int]]]  # per duplicated layer: the cores of each copy
    stages: list[StageNote] = field(default_factory=list)  # pipeline only
    micro_batches: int = 1  # pipeline: micro-batches streamed through the stages

    def figures(self, makespan_cycles: int, tokens: int | None) -> dict[str, object]:
        """Mapping, copies, core groups and throughput for a JSON object that holds the
        latency already (`makespan_cycles`, one run)."""
        per_cycle = tokens / makespan_cycles if tokens and makespan_cycles else None
        return {
            "mapping": self.mapping,
            "copies": self.copies,
            "core_groups": self.core_groups,
            "stages": [vars(s) for s in self.stages],
            "micro_batches": self.micro_batches,
            "run_tokens": tokens,  # tokens one run processes
            "tokens_per_cycle": per_cycle,
        }


def program_mapping(program: Program) -> ProgramMapping:
    copies: dict[str, int] = {}
    groups: dict[str, list[list[int]]] = {}
    stages: list[StageNote] = []
    micro = 0
    for item in program.header:
        text = item.text.strip() if isinstance(item, Comment) else ""
        if match := _LAYER.match(text):
            layer, count, cores = match.groups()
            copies[layer] = int(count)
            groups[layer] = [[int(c) for c in g.split(",")] for g in cores.split(" | ")]
        elif match := _PIPE.match(text):
            micro = int(match.group(2))
        elif match := _STAGE.match(text):
            _, cores, first, last = match.groups()
            stages.append(StageNote([int(c) for c in cores.split(",")], first, last))
    if micro:
        return ProgramMapping("pipeline", {}, {}, stages, micro)
    return ProgramMapping("duplicate" if copies else "spread", copies, groups)


def input_tokens(inputs: Sequence[GraphInput]) -> int | None:
    """Tokens of one run: the largest count over the inputs (None: no input says)."""
    counts = [
        math.prod(g.shape) if g.meaning == "token_ids" else math.prod(g.shape[:-1])
        for g in inputs
        if g.meaning == "token_ids" or (g.meaning == "float" and len(g.shape) >= 2)
    ]
    return max(counts, default=None)


def program_tokens(program: Program) -> int | None:
    """Tokens of one run by the inputs its constants file records (None: no such file)."""
    path = existing_consts_path(program)
    if path is None:
        return None
    bindings = bindings_of(MappedConsts(path).metadata, str(path))
    return input_tokens(bindings.graph_inputs) if bindings is not None else None
