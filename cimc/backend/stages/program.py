"""The program passes: a compiled program in, a program computing the same bytes out.

Each wraps a program -> program function of cimc/backend/program_passes/; the manager
verifies the result with the machine's validator (cimc/machine/validator.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from cimc.backend.builder.compiled import Compiled
from cimc.backend.program_passes.hoist import hoist_const_loads
from cimc.backend.program_passes.merge_sends import merge_sends
from cimc.backend.program_passes.stage_consts import stage_consts
from cimc.errors import CimcError
from cimc.machine.program import Program
from cimc.passes.manager import Pass, PassResult, register_pass


@dataclass(frozen=True)
class ProgramPass(Pass):
    """A pass on the program level: `rewrite` returns the new program (or the same one)."""

    INPUT: ClassVar[str] = "program"
    OUTPUT: ClassVar[str] = "program"

    def apply(self, ir: Any) -> PassResult:
        if not isinstance(ir, Compiled):
            raise CimcError(
                f"pass {self.NAME} runs on a program (after lower), not on {type(ir).__name__}"
            )
        program = self.rewrite(ir)
        return PassResult(replace(ir, program=program), program is not ir.program)

    def rewrite(self, compiled: Compiled) -> Program:
        raise NotImplementedError


@register_pass
@dataclass(frozen=True)
class StageConsts(ProgramPass):
    """copy the small constants into the global buffer at the start (read from there)."""

    NAME = "stage-consts"

    def rewrite(self, compiled: Compiled) -> Program:
        return stage_consts(compiled.program, compiled.arch)


@register_pass
@dataclass(frozen=True)
class HoistConstLoads(ProgramPass):
    """move loads of constants up their core's stream, ahead of the weight stream."""

    NAME = "hoist-const-loads"

    def rewrite(self, compiled: Compiled) -> Program:
        return hoist_const_loads(compiled.program)


@register_pass
@dataclass(frozen=True)
class MergeSends(ProgramPass):
    """runs of sends of one buffer from one core become one mcast."""

    NAME = "merge-sends"

    def rewrite(self, compiled: Compiled) -> Program:
        return merge_sends(compiled.program)


def program_passes() -> list[ProgramPass]:
    """The program passes of the `backend` composite, in order."""
    return [StageConsts(), HoistConstLoads(), MergeSends()]


def finished(compiled: Compiled) -> Program:
    """The program after `program_passes`: what a candidate of `lower` is priced by (the
    passes change schedules by several percent, and not alike for every mapping)."""
    for p in program_passes():
        compiled = replace(compiled, program=p.rewrite(compiled))
    return compiled.program
