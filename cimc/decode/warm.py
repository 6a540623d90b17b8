"""Weights that stay in the macros from one decode step to the next.

A decode program runs once per token. Its weight tiles are of two kinds:
- *kept*: a macro whose every `mload` writes constant data (weights staged from a `.const`
  by a `dma`) into windows that no later `mload` overwrites ends the run holding exactly
  what the run needs. Declared `.persist`, it carries those cells into the next run, and
  the next run can skip its loads (and the staging `dma`s that fed only them);
- *streamed*: macros that are reloaded within the run (the planner's streaming banks) or
  hold run-time data (attention K^T / V) are loaded every token, as before.
So the first decode step runs the *cold* program (every load, macros handed back) and the
steps after it the *warm* one (only the streamed loads). Which macros stay follows from
the policy's placement (cimc/backend/plan/streaming.py): everything when the weights fit, the
pinned bank under `pin-what-fits`, little under `double-buffer`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cimc.machine.opcodes import Access, spec_of
from cimc.machine.program import CoreStream, Instr, MacroRef, Persist, Program, View

MacroKey = tuple[int, int]


@dataclass(frozen=True)
class WarmDecode:
    cold: Program  # every load; declares `.persist` for the kept macros
    warm: Program  # the kept macros' loads (and their staging dmas) removed
    kept: tuple[MacroKey, ...]  # (core, macro)
    skipped_load_bytes: int  # bytes the warm program does not write into macros


def warm_decode(program: Program) -> WarmDecode | None:
    """The cold / warm pair of a decode program, or None when no macro can stay."""
    consts = {d.name for d in program.decls_of("const")}
    kept = sorted(_kept_macros(program, consts))
    if not kept:
        return None
    persists = tuple(Persist(core, macro) for core, macro in kept)
    header = (*program.header, *persists)
    streams, skipped = [], 0
    for stream in program.cores:
        drop = _dropped(stream, consts, {m for c, m in kept if c == stream.core})
        skipped += sum(
            _window_bytes(i) for k, i in enumerate(stream.instrs) if k in drop and _is_mload(i)
        )
        instrs = iter(range(len(stream.instrs)))
        items = []
        for item in stream.items:
            if isinstance(item, Instr) and next(instrs) in drop:
                continue
            items.append(item)
        streams.append(CoreStream(stream.core, tuple(items), stream.line))
    cold = replace(program, header=header)
    name = program.source_name.removesuffix(".cimasm") + "-warm.cimasm"
    warm = replace(program, header=header, cores=tuple(streams), source_name=name)
    return WarmDecode(cold, warm, tuple(kept), skipped)


def _is_mload(instr: Instr) -> bool:
    return instr.opcode in ("mload", "mload.t")


def _window_bytes(instr: Instr) -> int:
    ref = instr.operands[0]
    assert isinstance(ref, MacroRef)
    return ref.shape[0] * ref.shape[1]


def _kept_macros(program: Program, consts: set[str]) -> set[MacroKey]:
    """Macros loaded only with constant data, each cell at most once."""
    good: dict[MacroKey, bool] = {}
    windows: dict[MacroKey, list[MacroRef]] = {}
    for stream in program.cores:
        staged: list[View] = []  # sp views holding constant data
        for instr in stream.instrs:
            spec = spec_of(instr)
            written = spec.macro(instr)
            if written is not None and written[1] == Access.WRITE and not _is_mload(instr):
                key = (stream.core, written[0].index)  # run-time rows (mload.m): not kept
                good[key] = False
                windows.setdefault(key, []).append(written[0])
            if _is_mload(instr):
                ref, src = instr.operands[0], spec.reads(instr)[0]
                assert isinstance(ref, MacroRef)
                key = (stream.core, ref.index)
                from_const = src.symbol in consts or any(_inside(src, v) for v in staged)
                overlaps = any(_windows_overlap(ref, w) for w in windows.get(key, []))
                good[key] = good.get(key, True) and from_const and not overlaps
                windows.setdefault(key, []).append(ref)
            for v in spec.writes(instr):
                if v.space == "sp":
                    staged = [s for s in staged if not _overlap(s, v)]
            if instr.opcode == "dma" and spec.reads(instr)[0].symbol in consts:
                dst = spec.writes(instr)[0]
                if dst.space == "sp":
                    staged.append(dst)
    return {key for key, ok in good.items() if ok}


def _dropped(stream: CoreStream, consts: set[str], kept: set[int]) -> set[int]:
    """Indices of the kept macros' mloads and of the staging dmas only they read."""
    drop: set[int] = set()
    open_dmas: list[tuple[int, View, list[bool]]] = []  # dma index, staged view, readers
    finished: list[tuple[int, list[bool]]] = []
    for k, instr in enumerate(stream.instrs):
        spec = spec_of(instr)
        skip = _is_mload(instr) and isinstance(instr.operands[0], MacroRef)
        skip = skip and instr.operands[0].index in kept  # type: ignore[union-attr]
        if skip:
            drop.add(k)
        for v in spec.reads(instr):
            for _, staged, readers in open_dmas:
                if v.space == "sp" and _overlap(staged, v):
                    readers.append(skip)
        for v in spec.writes(instr):
            if v.space == "sp":
                done = [e for e in open_dmas if _overlap(e[1], v)]
                finished += [(i, r) for i, _, r in done]
                open_dmas = [e for e in open_dmas if not _overlap(e[1], v)]
        if instr.opcode == "dma" and spec.reads(instr)[0].symbol in consts:
            dst = spec.writes(instr)[0]
            if dst.space == "sp":
                open_dmas.append((k, dst, []))
    finished += [(i, r) for i, _, r in open_dmas]
    drop |= {i for i, readers in finished if readers and all(readers)}
    return drop


def _overlap(a: View, b: View) -> bool:
    return a.space == b.space and a.addr < b.end and b.addr < a.end


def _inside(a: View, b: View) -> bool:
    return a.space == b.space and b.addr <= a.addr and a.end <= b.end


def _windows_overlap(a: MacroRef, b: MacroRef) -> bool:
    return a.r0 < b.r1 and b.r0 < a.r1 and a.c0 < b.c1 and b.c0 < a.c1
