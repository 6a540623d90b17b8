"""Verification of a compiled model: interpreter == integer golden, bit for bit.

    report = verify_compiled(result.compiled, result.float_graph, inputs)
    report.bit_exact, report.divergence, report.as_json()

Both executors run the same inputs (float inputs are quantized on the host exactly as the
golden does). Every output is compared element for element. On a mismatch the program
runs again with a trace and the shared-memory writes are replayed: each graph value is
read back right after the last instruction of its node (instructions carry their node in
their location comment) and compared with the golden's value, in graph order. The first
that differs is the divergence; the instruction reported is the last one of that node
that wrote its first wrong element. When the program checked is not the compiler's own
(edited, or read back from a file), a shadow run of the compiled program also names the
first instruction whose result differs. Accuracy: dequantized outputs vs the float graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from cimc.backend.compile import Compiled, graph_outputs, program_inputs
from cimc.errors import CimcError
from cimc.ir.graph import Graph
from cimc.machine.interpreter import TraceEvent, instr_text, run_program
from cimc.machine.opcodes import spec_of
from cimc.machine.printer import print_program
from cimc.machine.program import DTYPE_BYTES, Instr, Program, View
from cimc.quant.accuracy import cosine
from cimc.quant.golden import Golden, dequantize_outputs

NP = {"i8": np.int8, "i16": np.int16, "i32": np.int32, "i64": np.int64}


@dataclass(frozen=True)
class OutputCheck:
    name: str
    shape: tuple[int, ...]
    mismatched: int
    cosine: float  # dequantized interpreter output vs float (1.0 when not codes)
    max_abs_error: float


@dataclass(frozen=True)
class Divergence:
    """The first graph value whose machine contents differ from the golden's."""

    value: str
    where: str  # the node's location
    mismatched: int
    index: tuple[int, ...]  # first wrong element (in the value's shape)
    got: int
    want: int
    instruction: str  # text of the last instruction that wrote that element
    instruction_location: str  # FILE:LINE:COL
    core: int
    error: str = ""  # set when the program stopped with a run-time error there
    # When the program checked is not the compiler's own (e.g. read back from a file): the
    # first executed instruction that differs from, or writes other values than, the same
    # instruction in a shadow run of the compiled program.
    first_differing: str = ""
    first_differing_location: str = ""
    first_differing_core: int = -1

    def message(self) -> str:
        if self.error:
            return (
                f"the program failed in %{self.value} at {self.instruction_location} "
                f"(`{self.instruction}`): {self.error}"
            )
        shadow = (
            f"; the first instruction whose result differs from the compiled program's is "
            f"`{self.first_differing}` on core {self.first_differing_core} at "
            f"{self.first_differing_location}"
            if self.first_differing
            else ""
        )
        return (
            f"first diverging value %{self.value} ({self.mismatched} elements differ; at "
            f"{list(self.index)} machine {self.got} != golden {self.want}), written by "
            f"`{self.instruction}` on core {self.core} at {self.instruction_location}{shadow}"
        )


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
            "divergence": None if self.divergence is None else _divergence_json(self.divergence),
            **self.figures,
        }


def _divergence_json(d: Divergence) -> dict[str, Any]:
    return {
        "value": d.value,
        "where": d.where,
        "mismatched": d.mismatched,
        "index": list(d.index),
        "got": d.got,
        "want": d.want,
        "instruction": d.instruction,
        "instruction_location": d.instruction_location,
        "core": d.core,
        "error": d.error,
        "first_differing": d.first_differing,
        "first_differing_location": d.first_differing_location,
        "first_differing_core": d.first_differing_core,
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
            divergence = _with_first_differing(compiled, feeds, divergence, program, traced.trace)
    checks = _accuracy(compiled, float_graph, inputs, got, bad)
    figures = cost_figures(compiled, program) if with_figures else {}
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


# ---------------------------------------------------------------- divergence


def run_time_failure(compiled: Compiled, program: Program, error: CimcError) -> Divergence | None:
    """A run-time error of the program as a divergence at the failing instruction's node."""
    parts = (error.location or "").rsplit(":", 2)
    line = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else -1
    for stream in program.cores:
        for instr in stream.instrs:
            node = compiled.comments.get(instr.comment or "")
            if instr.line == line and node is not None:
                where = compiled.graph.node(node).where
                loc = error.location or program.loc(instr)
                return Divergence(
                    node, where, 0, (), 0, 0, instr_text(instr), loc, stream.core, error.message
                )
    return None


class _Shadow:
    """gb and dram contents rebuilt from the trace's writes."""

    def __init__(self, views: Mapping[str, View]) -> None:
        ends: dict[str, int] = {}
        for v in views.values():
            ends[v.space] = max(ends.get(v.space, 0), v.end)
        self.mem = {s: np.zeros(n, np.uint8) for s, n in ends.items()}

    def array(self, v: View) -> np.ndarray | None:
        mem = self.mem.get(v.space)
        if mem is None or v.end > mem.size:
            return None
        eb = DTYPE_BYTES[v.dtype]
        return np.ndarray((v.rows, v.cols), NP[v.dtype], mem, v.addr, (v.stride * eb, eb))

    def apply(self, event: TraceEvent) -> None:
        for view, data in zip(spec_of(event.instr).writes(event.instr), event.writes, strict=True):
            if view.space in self.mem:
                target = self.array(view)
                if target is not None:
                    target[...] = data.reshape(target.shape)


def _with_first_differing(
    compiled: Compiled,
    feeds: dict[str, np.ndarray],
    divergence: Divergence,
    program: Program,
    trace: list[TraceEvent],
) -> Divergence:
    """Name the first executed instruction that is not the compiled program's instruction at
    the same (core, pc), or that wrote different values there (a shadow run of it)."""
    try:
        shadow = run_program(compiled.program, compiled.arch, feeds, compiled.consts, trace=True)
    except CimcError:  # the compiled program fails itself: no reference to compare with
        return divergence
    expected = {(e.core, e.pc): e for e in shadow.trace}
    for event in trace:
        twin = expected.get((event.core, event.pc))
        same = (
            twin is not None
            and twin.instr == event.instr
            and all(np.array_equal(a, b) for a, b in zip(event.writes, twin.writes, strict=True))
        )
        if not same:
            return replace(
                divergence,
                first_differing=instr_text(event.instr),
                first_differing_location=program.loc(event.instr),
                first_differing_core=event.core,
            )
    return divergence


def _node_events(compiled: Compiled, trace: list[TraceEvent]) -> dict[str, list[int]]:
    events: dict[str, list[int]] = {}
    for i, event in enumerate(trace):
        node = compiled.comments.get(event.instr.comment or "")
        if node is not None:
            events.setdefault(node, []).append(i)
    return events


def find_divergence(
    compiled: Compiled,
    program: Program,
    trace: list[TraceEvent],
    golden: Mapping[str, np.ndarray],
) -> Divergence | None:
    """The first value (graph order) whose contents after its node differ from the golden."""
    events = _node_events(compiled, trace)
    finish = {ev[-1]: node for node, ev in events.items() if node in compiled.views}
    shadow = _Shadow(compiled.views)
    wrong: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for i, event in enumerate(trace):
        shadow.apply(event)
        node = finish.get(i)
        if node is None or node not in golden:
            continue
        view = compiled.views[node]
        got = shadow.array(view)
        want = np.asarray(golden[node]).astype(np.int64).reshape(view.shape)
        if got is not None and not np.array_equal(got.astype(np.int64), want):
            wrong[node] = (got.astype(np.int64).copy(), want)
    for node in compiled.graph.order():
        if node in wrong:
            return _describe(compiled, program, trace, events[node], node, *wrong[node])
    return None


def _describe(
    compiled: Compiled,
    program: Program,
    trace: list[TraceEvent],
    node_events: list[int],
    name: str,
    got: np.ndarray,
    want: np.ndarray,
) -> Divergence:
    view = compiled.views[name]
    r, c = (int(i) for i in np.argwhere(got != want)[0])
    addr = view.addr + (r * view.stride + c) * view.elem_bytes
    writer = _last_writer(trace, node_events, view.space, addr)
    node = compiled.graph.node(name)
    index = np.unravel_index(r * view.cols + c, node.type.shape) if node.type.shape else ()
    return Divergence(
        name,
        node.where,
        int(np.count_nonzero(got != want)),
        tuple(int(i) for i in index),
        int(got[r, c]),
        int(want[r, c]),
        instr_text(writer[1]),
        program.loc(writer[1]),
        writer[0],
    )


def _last_writer(
    trace: list[TraceEvent], node_events: list[int], space: str, addr: int
) -> tuple[int, Instr]:
    for i in reversed(node_events):
        instr = trace[i].instr
        for v in spec_of(instr).writes(instr):
            if v.space == space and any(a <= addr < z for a, z in v.row_ranges()):
                return trace[i].core, instr
    last = trace[node_events[-1]]
    return last.core, last.instr


# ---------------------------------------------------------------- figures


def cost_figures(compiled: Compiled, program: Program | None = None) -> dict[str, Any]:
    """The schedule's figures of the program (cimc.machine.summary) for the JSON report."""
    from cimc.machine.summary import summarize

    program = program or compiled.program
    s = summarize(program, compiled.arch)
    return {
        "arch": compiled.arch.name,
        "instructions": sum(len(stream.instrs) for stream in program.cores),
        "cycles": s.makespan_cycles,
        "energy_uj": s.energy_total_uj,
        "macro_utilization": s.macro_cell_utilization,
        "weight_bytes_loaded": weight_bytes_loaded(program),
        "lower_bound_cycles": s.lower_bound_cycles,
    }


def weight_bytes_loaded(program: Program) -> int:
    """Bytes written into macros from constants (static weights), directly or staged
    through the scratchpad by a dma from a `.const` (run-time K/V tiles do not count)."""
    consts = {d.name for d in program.decls_of("const")}
    total = 0
    for stream in program.cores:
        staged: list[tuple[int, int]] = []  # sp byte ranges holding constant data
        for instr in stream.instrs:
            spec = spec_of(instr)
            if instr.opcode in ("mload", "mload.t"):
                src = spec.reads(instr)[0]
                from_const = src.symbol in consts or (
                    src.space == "sp" and any(a <= src.addr and src.end <= z for a, z in staged)
                )
                total += src.nbytes if from_const else 0
            for v in spec.writes(instr):
                if v.space != "sp":
                    continue
                staged = [(a, z) for a, z in staged if z <= v.addr or v.end <= a]
                if instr.opcode == "dma" and spec.reads(instr)[0].symbol in consts:
                    staged.append((v.addr, v.end))
    return total
