"""Where a wrong program first goes wrong, for `cimc verify` (cimc/verify.py).

On a mismatch the program runs again with a trace and the shared-memory writes are
replayed: each graph value is read back right after the last instruction of its node
(instructions carry their node in their location comment) and compared with the golden's
value, in graph order. The first that differs is the divergence; the instruction reported
is the last one of that node that wrote its first wrong element. When the program checked
is not the compiler's own (edited, or read back from a file), a shadow run of the compiled
program also names the first instruction whose result differs. A run-time error is a
divergence at the failing instruction's node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from cimc.backend.builder.compiled import Compiled
from cimc.errors import CimcError
from cimc.machine.interpreter import TraceEvent, instr_text, run_program
from cimc.machine.opcodes import spec_of
from cimc.machine.program import DTYPE_BYTES, Instr, Program, View
from cimc.machine.state import NP_DTYPES


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


def divergence_json(d: Divergence) -> dict[str, Any]:
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
        return np.ndarray((v.rows, v.cols), NP_DTYPES[v.dtype], mem, v.addr, (v.stride * eb, eb))

    def apply(self, event: TraceEvent) -> None:
        for view, data in zip(spec_of(event.instr).writes(event.instr), event.writes, strict=True):
            if view.space in self.mem:
                target = self.array(view)
                if target is not None:
                    target[...] = data.reshape(target.shape)


def with_first_differing(
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
    """The first value (graph order) whose contents as its node left them differ from the
    golden: the shared memory at the node's last event, overlaid with the node's own writes
    into its view. With point-to-point sync another core may reuse a value's storage (once
    its readers are done) before the node's last event on a slower core, so the memory at
    that event alone can already hold the next value."""
    events = _node_events(compiled, trace)
    finish = {ev[-1]: node for node, ev in events.items() if node in compiled.views}
    owner = {i: node for node, ev in events.items() if node in golden for i in ev}
    shadow = _Shadow(compiled.views)
    own: dict[str, _OwnWrites] = {}
    wrong: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for i, event in enumerate(trace):
        shadow.apply(event)
        node = owner.get(i)
        if node is not None and node in compiled.views:
            own.setdefault(node, _OwnWrites(compiled.views[node])).apply(event)
        node = finish.get(i)
        if node is None or node not in golden:
            continue
        view = compiled.views[node]
        got = shadow.array(view)
        if got is None:
            continue
        if node in own:
            got = own[node].over(shadow, view)
        want = np.asarray(golden[node]).astype(np.int64).reshape(view.shape)
        if not np.array_equal(got.astype(np.int64), want):
            wrong[node] = (got.astype(np.int64).copy(), want)
    for node in compiled.graph.order():
        if node in wrong:
            return _describe(compiled, program, trace, events[node], node, *wrong[node])
    return None


class _OwnWrites:
    """The bytes a node wrote into its value's view, in trace order."""

    def __init__(self, view: View) -> None:
        self.view = view
        self.data = np.zeros(view.end - view.addr, np.uint8)
        self.mask = np.zeros(view.end - view.addr, bool)

    def apply(self, event: TraceEvent) -> None:
        lo, hi = self.view.addr, self.view.end
        for w, data in zip(spec_of(event.instr).writes(event.instr), event.writes, strict=True):
            if w.space != self.view.space or w.end <= lo or hi <= w.addr:
                continue
            rows = np.ascontiguousarray(data.astype(NP_DTYPES[w.dtype]).reshape(w.rows, w.cols))
            raw = rows.view(np.uint8).reshape(w.rows, -1)
            eb = DTYPE_BYTES[w.dtype]
            for r in range(w.rows):
                a = w.addr + r * w.stride * eb
                s, e = max(a, lo), min(a + w.cols * eb, hi)
                if s < e:
                    self.data[s - lo : e - lo] = raw[r, s - a : e - a]
                    self.mask[s - lo : e - lo] = True

    def over(self, shadow: _Shadow, view: View) -> np.ndarray:
        """The view's elements: shared memory now, where the node wrote, its bytes."""
        mem = shadow.mem[view.space][view.addr : view.end].copy()
        mem[self.mask] = self.data[self.mask]
        eb = DTYPE_BYTES[view.dtype]
        dtype = NP_DTYPES[view.dtype]
        return np.ndarray((view.rows, view.cols), dtype, mem, 0, (view.stride * eb, eb))


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
