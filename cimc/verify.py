"""Verification of a compiled model: interpreter == integer golden, bit for bit.

    report = verify_compiled(result.compiled, result.float_graph, inputs)
    report.bit_exact, report.divergence, report.as_json()

Both executors run the same inputs (float inputs are quantized on the host exactly as the
golden does). Every output is compared element for element; on a mismatch the first
diverging graph value and the instruction that wrote it are found (cimc/divergence.py).
Accuracy: dequantized outputs vs the float graph. Figures: the schedule's cost summary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from cimc.backend.builder.compiled import Compiled, graph_outputs, program_inputs
from cimc.divergence import (
    Divergence,
    divergence_json,
    find_divergence,
    run_time_failure,
    with_first_differing,
)
from cimc.errors import CimcError
from cimc.ir.graph import Graph
from cimc.machine.dynamic import Dynamic, valid_count
from cimc.machine.interpreter import run_program
from cimc.machine.opcodes import spec_of
from cimc.machine.printer import print_program
from cimc.machine.program import Instr, Program
from cimc.quant.accuracy import cosine
from cimc.quant.golden import Golden, dequantize_outputs


@dataclass(frozen=True)
class OutputCheck:
    name: str
    shape: tuple[int, ...]
    mismatched: int
    cosine: float  # dequantized interpreter output vs float (1.0 when not codes)
    max_abs_error: float


@dataclass(frozen=True)
class VerifyReport:
    bit_exact: bool
    mismatched_elements: int
    outputs: tuple[OutputCheck, ...]
    divergence: Divergence | None
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def cosine_vs_float(self) -> float:
        return min((o.cosine for o in self.outputs), default=1.0)

    def as_json(self) -> dict[str, Any]:
        return {
            "bit_exact": self.bit_exact,
            "mismatched_elements": self.mismatched_elements,
            "cosine_vs_float": self.cosine_vs_float,
            "outputs": {
                o.name: {
                    "shape": list(o.shape),
                    "cosine": o.cosine,
                    "max_abs_error": o.max_abs_error,
                    "mismatched": o.mismatched,
                }
                for o in self.outputs
            },
            "divergence": None if self.divergence is None else divergence_json(self.divergence),
            **self.figures,
        }


def located_program(compiled: Compiled, program: Program | None = None) -> Program:
    """The program with the line numbers of its printed text (for FILE:LINE:COL messages).

    Instructions are numbered by walking the canonical text (cheaper than parsing it)."""
    program = program or compiled.program
    if program.cores and program.cores[0].line:
        return program
    lines = print_program(program).splitlines()
    streams, at = [], 0
    for stream in program.cores:
        at = lines.index(f".core {stream.core}", at)
        header, items = at + 1, []
        for item in stream.items:
            at += 1
            while not lines[at].strip():
                at += 1
            items.append(replace(item, line=at + 1, col=3) if isinstance(item, Instr) else item)
        streams.append(replace(stream, items=tuple(items), line=header))
    return replace(program, cores=tuple(streams))


def verify_compiled(
    compiled: Compiled,
    float_graph: Graph | None,
    inputs: Mapping[str, np.ndarray],
    program: Program | None = None,
    with_figures: bool = True,
) -> VerifyReport:
    """Run interpreter and golden on `inputs`; compare; report accuracy vs float.

    `program` replaces the compiled program (e.g. one read back from a file)."""
    program = located_program(compiled, program)
    feeds = program_inputs(compiled, inputs)
    golden = Golden(compiled.graph).run(inputs, keep_all=True)
    try:
        run = run_program(program, compiled.arch, feeds, compiled.consts)
    except CimcError as e:
        failure = run_time_failure(compiled, program, e)
        if failure is None:
            raise
        total = sum(int(v.size) for v in golden.outputs.values())
        return VerifyReport(False, total, (), failure)
    got = graph_outputs(compiled, run.outputs)
    bad = {k: int(np.count_nonzero(got[k] != golden.outputs[k])) for k in golden.outputs}
    divergence = None
    if any(bad.values()):
        traced = run_program(program, compiled.arch, feeds, compiled.consts, trace=True)
        divergence = find_divergence(compiled, program, traced.trace, golden.values)
        if divergence is not None and program.cores != compiled.program.cores:
            divergence = with_first_differing(compiled, feeds, divergence, program, traced.trace)
    checks = _accuracy(compiled, float_graph, inputs, got, bad)
    figures = cost_figures(compiled, program, run.dynamic) if with_figures else {}
    return VerifyReport(not any(bad.values()), sum(bad.values()), checks, divergence, figures)


def _accuracy(
    compiled: Compiled,
    float_graph: Graph | None,
    inputs: Mapping[str, np.ndarray],
    got: dict[str, np.ndarray],
    bad: dict[str, int],
) -> tuple[OutputCheck, ...]:
    real = dequantize_outputs(compiled.graph, got)
    ref: dict[str, np.ndarray] = {}
    if float_graph is not None:
        from cimc.reference.float_model import run_graph

        ref = run_graph(float_graph, inputs)
    checks = []
    for o in compiled.outputs:
        r = ref.get(o.graph_output)
        value = np.asarray(real[o.graph_output], np.float64)
        if r is None or not np.issubdtype(np.asarray(r).dtype, np.floating):
            checks.append(OutputCheck(o.graph_output, o.shape, bad[o.graph_output], 1.0, 0.0))
            continue
        err = float(np.abs(value - r).max(initial=0.0))
        cos = float(cosine(np.asarray(r, np.float64), value))
        checks.append(OutputCheck(o.graph_output, o.shape, bad[o.graph_output], cos, err))
    return tuple(checks)


# ---------------------------------------------------------------- figures


def cost_figures(
    compiled: Compiled, program: Program | None = None, dynamic: Dynamic | None = None
) -> dict[str, Any]:
    """The schedule's figures of the program (cimc.machine.summary) for the JSON report;
    `dynamic`: the run's record of data-dependent loads (priced as that run moved them)."""
    from cimc.machine.summary import summarize

    program = program or compiled.program
    s = summarize(program, compiled.arch, dynamic=dynamic)
    return {
        "arch": compiled.arch.name,
        "instructions": sum(len(stream.instrs) for stream in program.cores),
        "makespan_cycles": s.makespan_cycles,
        "energy_uj": s.energy_uj,
        "macro_cell_utilization": s.macro_cell_utilization,
        "weight_bytes_loaded": weight_bytes_loaded(program, dynamic),
        "lower_bound_cycles": s.lower_bound_cycles,
    }


def weight_bytes_loaded(program: Program, dynamic: Dynamic | None = None) -> int:
    """Bytes written into macros from constants (static weights), directly or staged
    through the scratchpad by a dma or gather.m from a `.const` (run-time K/V tiles do not
    count). An `mload.m` writes the rows its index names: in the run `dynamic` records
    (cimc/machine/dynamic.py), else all of them."""
    consts = {d.name for d in program.decls_of("const")}
    total = 0
    for stream in program.cores:
        staged: list[tuple[int, int]] = []  # sp byte ranges holding constant data
        for pc, instr in enumerate(stream.instrs):
            spec = spec_of(instr)
            if instr.opcode in ("mload", "mload.t", "mload.m"):
                src = spec.reads(instr)[0]
                from_const = src.symbol in consts or (
                    src.space == "sp" and any(a <= src.addr and src.end <= z for a, z in staged)
                )
                index = (dynamic or {}).get((stream.core, pc))
                rows = valid_count(index, src.rows) if instr.opcode == "mload.m" else src.rows
                total += rows * src.cols * src.elem_bytes if from_const else 0
            for v in spec.writes(instr):
                if v.space != "sp":
                    continue
                staged = [(a, z) for a, z in staged if z <= v.addr or v.end <= a]
                loads = instr.opcode in ("dma", "gather.m")
                if loads and spec.reads(instr)[0].symbol in consts:
                    staged.append((v.addr, v.end))
    return total
