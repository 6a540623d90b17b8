"""Verification of a compiled model: interpreter == integer golden, bit for bit.

    report = verify_compiled(result.compiled, result.float_graph, inputs)
    report.bit_exact, report.divergence, report.as_json()

Both executors run the same inputs (float inputs are quantized on the host exactly as the
golden does). Every output is compared element for element; on a mismatch the first
diverging graph value and the instruction that wrote it are found (cimc/divergence.py).
Accuracy: dequantized outputs vs the float graph, over real tokens and as a mean-pooled
embedding for encoders (cimc/quant/pooling.py), and per graph value on request
(`per_node`: where accuracy goes, cimc/quant/accuracy.py). `verify_samples` does it all
over several input sets. Figures: the schedule's cost summary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from cimc.quant.accuracy import Agreement, ValueAccuracy, ValueStats
from cimc.quant.golden import Golden, dequantize_outputs
from cimc.quant.pooling import EmbeddingAgreement, attention_mask_input, token_states
from cimc.reference.float_model import FloatModel


@dataclass(frozen=True)
class OutputCheck:
    name: str
    shape: tuple[int, ...]
    mismatched: int
    cosine: float  # dequantized interpreter output vs float (1.0 when not codes)
    max_abs_error: float
    real_token_cosine: float | None = None  # encoder outputs: over attention-mask 1 only
    pooled_cosine: float | None = None  # ... mean-pooled embedding, worst sample

    def as_json(self) -> dict[str, Any]:
        view = {
            "real_token_cosine": self.real_token_cosine,
            "pooled_cosine": self.pooled_cosine,
        }
        return {
            "shape": list(self.shape),
            "cosine": self.cosine,
            "max_abs_error": self.max_abs_error,
            "mismatched": self.mismatched,
            **({} if self.pooled_cosine is None else view),
        }


@dataclass(frozen=True)
class VerifyReport:
    bit_exact: bool
    mismatched_elements: int
    outputs: tuple[OutputCheck, ...]
    divergence: Divergence | None
    figures: dict[str, Any] = field(default_factory=dict)
    samples: int = 1
    nodes: tuple[ValueAccuracy, ...] = ()  # per graph value, largest cosine drop first

    @property
    def cosine_vs_float(self) -> float:
        return min((o.cosine for o in self.outputs), default=1.0)

    def as_json(self) -> dict[str, Any]:
        per_node = {"nodes": [v.as_json() for v in self.nodes]} if self.nodes else {}
        return {
            "bit_exact": self.bit_exact,
            "mismatched_elements": self.mismatched_elements,
            "samples": self.samples,
            "cosine_vs_float": self.cosine_vs_float,
            "outputs": {o.name: o.as_json() for o in self.outputs},
            "divergence": None if self.divergence is None else divergence_json(self.divergence),
            **per_node,
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
    per_node: bool = False,
) -> VerifyReport:
    """Run interpreter and golden on `inputs`; compare; report accuracy vs float.

    `program` replaces the compiled program (e.g. one read back from a file)."""
    return verify_samples(compiled, float_graph, [inputs], program, with_figures, per_node)


def verify_samples(
    compiled: Compiled,
    float_graph: Graph | None,
    samples: Sequence[Mapping[str, np.ndarray]],
    program: Program | None = None,
    with_figures: bool = True,
    per_node: bool = False,
) -> VerifyReport:
    """`verify_compiled` over several input sets: every one must be bit-exact; accuracy
    (and, with `per_node`, the per-value rows) is accumulated over all of them. Stops at
    the first sample that is not bit-exact and reports its divergence."""
    program = located_program(compiled, program)
    accuracy = Accuracy(compiled, float_graph, per_node)
    dynamic: Dynamic | None = None
    for sample in samples:
        golden = Golden(compiled.graph).run(sample, keep_all=True)
        outcome = _run_program(compiled, program, sample, golden.values)
        if isinstance(outcome, Divergence):
            total = sum(int(v.size) for v in golden.outputs.values())
            return VerifyReport(False, total, (), outcome, samples=len(samples))
        got, bad, divergence, dynamic = outcome
        accuracy.add(sample, got, golden.values, bad)
        if any(bad.values()):
            return accuracy.report(divergence, {}, len(samples))
    # Data-dependent loads are priced as the last sample's run moved them.
    figures = cost_figures(compiled, program, dynamic) if with_figures else {}
    return accuracy.report(None, figures, len(samples))


def _run_program(
    compiled: Compiled,
    program: Program,
    inputs: Mapping[str, np.ndarray],
    golden_values: Mapping[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], dict[str, int], Divergence | None, Dynamic] | Divergence:
    """(program outputs, mismatches per output, divergence when any, the run's record of
    data-dependent loads) or a run-time failure."""
    feeds = program_inputs(compiled, inputs)
    try:
        run = run_program(program, compiled.arch, feeds, compiled.consts)
    except CimcError as e:
        failure = run_time_failure(compiled, program, e)
        if failure is None:
            raise
        return failure
    got = graph_outputs(compiled, run.outputs)
    outputs = {out: golden_values[name] for out, name in compiled.graph.outputs}
    bad = {k: int(np.count_nonzero(got[k] != outputs[k])) for k in outputs}
    divergence = None
    if any(bad.values()):
        traced = run_program(program, compiled.arch, feeds, compiled.consts, trace=True)
        divergence = find_divergence(compiled, program, traced.trace, golden_values)
        if divergence is not None and program.cores != compiled.program.cores:
            divergence = with_first_differing(compiled, feeds, divergence, program, traced.trace)
    return got, bad, divergence, run.dynamic


class Accuracy:
    """Dequantized program outputs vs the float graph, accumulated over samples; the
    encoder view (real tokens, pooled embedding) where an output is [1, S, H] and the
    model has an attention mask; per-value rows on request."""

    def __init__(self, compiled: Compiled, float_graph: Graph | None, per_node: bool) -> None:
        self.compiled, self.float_graph = compiled, float_graph
        self.outputs = {o.graph_output: Agreement() for o in compiled.outputs}
        self.views: dict[str, EmbeddingAgreement] = {}
        self.bad = dict.fromkeys(self.outputs, 0)
        self.floats = {o.graph_output: False for o in compiled.outputs}
        self.mask = None if float_graph is None else attention_mask_input(float_graph)
        self.model = None if float_graph is None else FloatModel(float_graph)
        self.values = ValueStats(float_graph, compiled.graph) if per_node and float_graph else None

    def add(
        self,
        sample: Mapping[str, np.ndarray],
        got: Mapping[str, np.ndarray],
        golden_values: Mapping[str, np.ndarray],
        bad: Mapping[str, int],
    ) -> None:
        for name, count in bad.items():
            self.bad[name] += count
        if self.float_graph is None or self.model is None:
            return
        floats = self.model.run_all(sample) if self.values else self.model.run(sample)
        if self.values is not None:
            self.values.add(floats, golden_values)
            floats = {out: floats[name] for out, name in self.float_graph.outputs}
        real = dequantize_outputs(self.compiled.graph, got)
        for name, agreement in self.outputs.items():
            ref = np.asarray(floats[name])
            if not np.issubdtype(ref.dtype, np.floating):
                continue
            self.floats[name] = True
            value = np.asarray(real[name], np.float64)
            agreement.add(ref, value)
            mask = None if self.mask is None else np.asarray(sample[self.mask])
            if mask is not None and token_states(ref.shape, mask.shape):
                self.views.setdefault(name, EmbeddingAgreement()).add(ref, value, mask)

    def report(
        self, divergence: Divergence | None, figures: dict[str, Any], samples: int
    ) -> VerifyReport:
        checks = tuple(self._check(o.graph_output, o.shape) for o in self.compiled.outputs)
        nodes = tuple(self.values.ranked()) if self.values else ()
        total = sum(self.bad.values())
        return VerifyReport(total == 0, total, checks, divergence, figures, samples, nodes)

    def _check(self, name: str, shape: tuple[int, ...]) -> OutputCheck:
        if not self.floats[name]:
            return OutputCheck(name, shape, self.bad[name], 1.0, 0.0)
        a, view = self.outputs[name], self.views.get(name)
        if view is None:
            return OutputCheck(name, shape, self.bad[name], a.cosine, a.max_error)
        tokens = view.tokens.cosine
        return OutputCheck(
            name, shape, self.bad[name], a.cosine, a.max_error, tokens, view.min_pooled
        )


# ---------------------------------------------------------------- figures


def cost_figures(
    compiled: Compiled, program: Program | None = None, dynamic: Dynamic | None = None
) -> dict[str, Any]:
    """The schedule's figures of the program (cimc.machine.summary) for the JSON report;
    `dynamic`: the run's record of data-dependent loads (priced as that run moved them);
    with the mapping that ran and its throughput (cimc/inspect/mapping.py)."""

    from cimc.backend.builder.saved import compiled_graph_inputs
    from cimc.inspect.mapping import input_tokens, program_mapping
    from cimc.machine.summary import summarize

    program = program or compiled.program
    s = summarize(program, compiled.arch, dynamic=dynamic)
    tokens = input_tokens(compiled_graph_inputs(compiled.graph))
    return {
        "arch": compiled.arch.name,
        "instructions": sum(len(stream.instrs) for stream in program.cores),
        "makespan_cycles": s.makespan_cycles,
        "energy_uj": s.energy_uj,
        "macro_cell_utilization": s.macro_cell_utilization,
        "weight_bytes_loaded": weight_bytes_loaded(program, dynamic),
        "lower_bound_cycles": s.lower_bound_cycles,
        **program_mapping(program).figures(s.makespan_cycles, tokens),
    }


def weight_bytes_loaded(program: Program, dynamic: Dynamic | None = None) -> int:
    """Bytes written into macros from constants (static weights), directly or staged
    through the scratchpad by a dma or gather.m from a `.const` (run-time K/V tiles do not
    count). An `mload.m` (`mload.t.m`) writes the rows its index names: in the run `dynamic` records
    (cimc/machine/dynamic.py), else all of them. A window cache (`.state NAME.cache` of a
    `.const NAME`, cimc/backend/lower/window_fill.py) holds constant rows: it counts."""
    consts = {d.name for d in program.decls_of("const")}
    consts |= {d.name for d in program.decls_of("state") if d.name.removesuffix(".cache") in consts}
    total = 0
    for stream in program.cores:
        staged: list[tuple[int, int]] = []  # sp byte ranges holding constant data
        for pc, instr in enumerate(stream.instrs):
            spec = spec_of(instr)
            if instr.opcode in ("mload", "mload.t", "mload.m", "mload.t.m"):
                src = spec.reads(instr)[0]
                from_const = src.symbol in consts or (
                    src.space == "sp" and any(a <= src.addr and src.end <= z for a, z in staged)
                )
                index = (dynamic or {}).get((stream.core, pc))
                masked = instr.opcode in ("mload.m", "mload.t.m")
                rows = valid_count(index, src.rows) if masked else src.rows
                total += rows * src.cols * src.elem_bytes if from_const else 0
            for v in spec.writes(instr):
                if v.space != "sp":
                    continue
                staged = [(a, z) for a, z in staged if z <= v.addr or v.end <= a]
                loads = instr.opcode in ("dma", "gather.m")
                if loads and spec.reads(instr)[0].symbol in consts:
                    staged.append((v.addr, v.end))
    return total
