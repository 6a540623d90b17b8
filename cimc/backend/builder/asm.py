"""A small program builder: declarations, address allocation, per-core instruction streams.

The lowerings (cimc/backend/lower/) append instructions through one `ProgramBuilder`:

    b = ProgramBuilder(load_arch("tiny"))
    x = b.input("x", "i8", 7, 96)
    y = b.output("y", "i8", 7, 250)
    with b.at("/fc"):
        lower_linear(b, x, y, plan)
    program, consts = b.build()          # or b.write(Path("out.cimasm"))

Why the builder orders shared accesses itself: lowerings spread work over cores and
exchange data through gb/dram. Rather than have every lowering reason about ordering, the
builder records the shared bytes each core touched and, before an access that would race
with another core's, emits a send/recv token between the two cores (or a barrier when it
conflicts with every other core): cimc/backend/builder/shared_order.py. The validator still checks
races independently (cimc/machine/sync.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from cimc.backend.builder.alloc import NP_OF, Allocator, fit_dtype, nbytes
from cimc.backend.builder.shared_order import SharedOrder
from cimc.errors import CimcError
from cimc.machine.arch import Arch
from cimc.machine.opcodes import check_operands, describe_error, opspec
from cimc.machine.program import (
    Comment,
    CoreItem,
    CoreSet,
    CoreStream,
    Decl,
    DeclKind,
    DType,
    Imm,
    Instr,
    MacroRef,
    Operand,
    Program,
    Space,
    View,
    dtype_range,
)
from cimc.machine.shape_rules import OperandError

DECL_ALIGN = 64
TOKEN_BYTES = 8  # top of every scratchpad: the byte sync tokens are sent from / received in
Arg = View | MacroRef | Imm | CoreSet | int


class EmitHook(Protocol):
    """The weight prefetcher, as the tile loaders see it (cimc/backend/stream/prefetch.py)."""

    def need(self, core: int, key: object) -> None: ...
    def owns(self, key: object) -> bool: ...
    def before(self, core: int, instr: Instr) -> None: ...
    def emitted(self, core: int, instr: Instr) -> None: ...
    def barrier(self, cores: list[int]) -> None: ...
    def node_done(self) -> None: ...


@dataclass
class _Window:
    r0: int
    r1: int
    c0: int
    c1: int
    key: object


@dataclass
class _CoreState:
    items: list[CoreItem] = field(default_factory=list)
    sp: Allocator | None = None


def views_overlap(a: View, b: View) -> bool:
    """Exact byte overlap of two views of the same space (strided rows compared)."""
    if a.space != b.space or a.end <= b.addr or b.end <= a.addr:
        return False
    ra, rb = a.row_ranges(), b.row_ranges()
    i = j = 0
    while i < len(ra) and j < len(rb):
        if ra[i][0] < rb[j][1] and rb[j][0] < ra[i][1]:
            return True
        if ra[i][1] <= rb[j][1]:
            i += 1
        else:
            j += 1
    return False


class ProgramBuilder:
    """Builds one `Program` plus its constants dict for `arch` on the given cores."""

    def __init__(self, arch: Arch, cores: Sequence[int] | None = None) -> None:
        self.arch = arch
        self.chip_cores = tuple(range(arch.chip.cores) if cores is None else cores)
        bad = [c for c in self.chip_cores if not 0 <= c < arch.chip.cores]
        if bad or not self.chip_cores:
            raise CimcError(f"cores {bad} do not exist on '{arch.name}'", "builder")
        # the cores lowerings spread work over: all of chip_cores, or a pipeline stage's
        self.cores = self.chip_cores
        self.loc: str | None = None
        self.header: list[Decl | Comment] = []
        self.consts: dict[str, np.ndarray] = {}
        self._const_views: dict[str, View] = {}
        self._shared = {
            s: Allocator(s, arch.space_bytes(s), f"memory.{s}_bytes", align=DECL_ALIGN)
            for s in ("gb", "dram", "flash")
        }
        self._cores: dict[int, _CoreState] = {}
        self._barriers = 0
        self._instrs = 0  # instructions in all streams (kept_rows compares counts)
        self._order = SharedOrder(self, self._new_tag)
        self._macros: dict[tuple[int, int], list[_Window]] = {}
        self._tags: dict[tuple[int, int], int] = {}
        self._views: dict[View, View] = {}  # see _interned
        self._names: set[str] = set()
        self._fresh = 0
        self._calls = 0  # see call_key
        self.hook: EmitHook | None = None  # weight prefetch (cimc/backend/stream/prefetch.py)
        self.held_rows: object | None = None  # kept in scratchpads (lower/kept_rows.py)

    # ------------------------------------------------------------------ declarations
    def call_key(self) -> int:
        """A number no other call gets: run-time data a lowering writes into the macros
        under a key is valid for that call only (a pipeline runs a node once per
        micro-batch, possibly on the same buffers), so its key includes this."""
        self._calls += 1
        return self._calls

    def fresh_name(self, stem: str) -> str:
        while True:
            self._fresh += 1
            name = f"{stem}{self._fresh}"
            if name not in self._names:
                return name

    def _declare(
        self, kind: DeclKind, name: str, space: Space, dtype: DType | None, r: int, c: int, n: int
    ) -> Decl:
        if name in self._names:
            raise CimcError(f"declaration name {name!r} is used twice", self.loc)
        if space not in self._shared:
            raise CimcError(
                f"{kind} {name!r} must live in gb, dram or flash, not {space}", self.loc
            )
        addr = self._shared[space].alloc(n)
        decl = Decl(kind, name, space, addr, dtype, r, c, n, comment=None)
        self._names.add(name)
        self.header.append(decl)
        return decl

    def _decl_view(self, decl: Decl, dtype: DType, r: int, c: int) -> View:
        return View(decl.space, decl.addr, dtype, r, c, symbol=decl.name, offset=0)

    def const(
        self, name: str, data: np.ndarray, dtype: DType | None = None, space: Space = "dram"
    ) -> View:
        """Declare constant `name` (2-D; 1-D becomes 1xN) and keep its data for the file."""
        arr = np.asarray(data)
        if arr.dtype.kind not in "iu":  # integer arrays keep their dtype (a big image stays i8)
            arr = arr.astype(np.int64)
        arr = arr.reshape(1, -1) if arr.ndim <= 1 else arr
        if arr.ndim != 2:
            raise CimcError(f"constant {name!r} must be 2-D, got shape {arr.shape}", self.loc)
        dt = dtype or fit_dtype(arr)
        lo, hi = dtype_range(dt)
        if arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
            raise CimcError(f"constant {name!r} does not fit {dt}", self.loc)
        r, c = arr.shape
        if name in self.consts:  # the same layer lowered again (e.g. the next decode step)
            old = self._const_views[name]
            if (old.dtype, old.shape) == (dt, arr.shape) and np.array_equal(self.consts[name], arr):
                return old
            raise CimcError(f"constant {name!r} declared twice with different data", self.loc)
        decl = self._declare("const", name, space, dt, r, c, nbytes(dt, r, c))
        self.consts[name] = np.ascontiguousarray(arr.astype(NP_OF[dt]))
        self._const_views[name] = self._decl_view(decl, dt, r, c)
        return self._const_views[name]

    def input(self, name: str, dtype: DType, r: int, c: int, space: Space = "dram") -> View:
        return self._decl_view(
            self._declare("input", name, space, dtype, r, c, nbytes(dtype, r, c)), dtype, r, c
        )

    def output(self, name: str, dtype: DType, r: int, c: int, space: Space = "dram") -> View:
        return self._decl_view(
            self._declare("output", name, space, dtype, r, c, nbytes(dtype, r, c)), dtype, r, c
        )

    def state(self, name: str, dtype: DType, r: int, c: int, space: Space = "dram") -> View:
        """A persistent `.state` tensor (e.g. a KV cache): it outlives the run."""
        return self._decl_view(
            self._declare("state", name, space, dtype, r, c, nbytes(dtype, r, c)), dtype, r, c
        )

    def region(self, name: str | None, dtype: DType, r: int, c: int, space: Space = "dram") -> View:
        """A named scratch tensor in shared memory (`.region`, zeroed at start)."""
        decl = self._declare(
            "region", name or self.fresh_name("tmp"), space, None, 0, 0, nbytes(dtype, r, c)
        )
        return self._decl_view(decl, dtype, r, c)

    def note(self, text: str, core: int | None = None) -> None:
        """A full-line comment in the header (core None) or in a core's stream."""
        if core is None:
            self.header.append(Comment(text))
        else:
            self._core(core).items.append(Comment(text))

    # ------------------------------------------------------------------ scratchpad
    def _core(self, core: int) -> _CoreState:
        if core not in self.chip_cores:
            raise CimcError(
                f"core {core} is not one of the builder's cores {self.chip_cores}", self.loc
            )
        state = self._cores.get(core)
        if state is None:
            sp = Allocator(f"scratchpad of core {core}", self.arch.core.scratchpad_bytes,
                           field="core.scratchpad_bytes")  # fmt: skip
            sp.reserve_top(TOKEN_BYTES)  # the sync-token byte (token_view), above the rest
            state = self._cores[core] = _CoreState(sp=sp)
            state.items.extend(Instr("barrier", ()) for _ in range(self._barriers))
            self._instrs += self._barriers
        return state

    def alloc(self, core: int, dtype: DType, r: int, c: int) -> View:
        sp = self._core(core).sp
        assert sp is not None
        return View("sp", sp.alloc(nbytes(dtype, r, c)), dtype, r, c)

    def free(self, core: int, *views: View) -> None:
        sp = self._core(core).sp
        assert sp is not None
        for v in views:
            sp.free(v.addr)

    def sp_largest_free(self, core: int) -> int:
        sp = self._core(core).sp
        assert sp is not None
        return sp.largest_free()

    @contextmanager
    def scratch(self, core: int) -> Iterator[Scratch]:
        """Buffers allocated through the yielded object are freed on exit."""
        s = Scratch(self, core)
        try:
            yield s
        finally:
            self.free(core, *s.views)

    # ------------------------------------------------------------------ instructions
    @contextmanager
    def on_cores(self, cores: Sequence[int]) -> Iterator[None]:
        """Lowerings inside spread their work over `cores` only (a pipeline stage's group);
        any core of the builder may still be emitted to (weight prefetches of other
        stages)."""
        if not cores or not set(cores) <= set(self.chip_cores):
            raise CimcError(f"cores {list(cores)} are not among the builder's", self.loc)
        old, self.cores = self.cores, tuple(cores)
        try:
            yield
        finally:
            self.cores = old

    @contextmanager
    def at(self, loc: str | None) -> Iterator[None]:
        """Source location (graph node) attached to the instructions emitted inside."""
        old, self.loc = self.loc, loc
        try:
            yield
        finally:
            self.loc = old

    def emit(self, core: int, opcode: str, *args: Arg, comment: str | None = None) -> Instr:
        operands = tuple(Imm(a) if isinstance(a, int) else a for a in args)
        spec = opspec(opcode)
        try:
            operands = check_operands(spec, operands)
        except OperandError as e:
            raise CimcError(
                f"internal lowering error: {describe_error(spec, e)}", self.loc
            ) from None
        operands = self._interned(operands)
        instr = Instr(opcode, operands, comment if comment is not None else self.loc)
        state = self._core(core)
        if self.hook is not None:
            self.hook.before(core, instr)
        self._order.before(core, instr)
        state.items.append(instr)
        self._instrs += 1
        if self.hook is not None:
            self.hook.emitted(core, instr)
        return instr

    def _interned(self, operands: tuple[Operand, ...]) -> tuple[Operand, ...]:
        """Equal views as one object: the interpreter builds the array of a view object once
        per run (Machine.array), so the buffers every op of a chunk names (a layer norm's
        temporaries) are built once, not at every instruction (benchmarks/FINDINGS.md,
        "Equal views interned")."""
        views = self._views
        return tuple(views.setdefault(o, o) if isinstance(o, View) else o for o in operands)

    def last(self, core: int) -> CoreItem:
        """The last item emitted on `core`."""
        return self._core(core).items[-1]

    def position(self, core: int) -> int:
        """Index the next item of `core` will have in its stream."""
        return len(self._core(core).items)

    def active_cores(self) -> list[int]:
        return sorted(self._cores)

    def append(self, core: int, instr: Instr) -> None:
        """A sync instruction from the shared-access ordering (no ordering of its own)."""
        operands = self._interned(check_operands(opspec(instr.opcode), instr.operands))
        instr = Instr(instr.opcode, operands, self.loc)
        if self.hook is not None:
            self.hook.before(core, instr)
        self._core(core).items.append(instr)
        self._instrs += 1
        if self.hook is not None:
            self.hook.emitted(core, instr)

    def token_view(self, core: int) -> View:
        """The core's sync-token byte (above everything the allocator hands out)."""
        return View("sp", self.arch.core.scratchpad_bytes - TOKEN_BYTES, "i8", 1, 1)

    def barrier(self) -> None:
        """A barrier on every active core (cores activated later get it prepended)."""
        if self.hook is not None:
            self.hook.barrier(sorted(self._cores))  # before: loads may go ahead of it
        self._barriers += 1
        for state in self._cores.values():
            state.items.append(Instr("barrier", ()))
            self._instrs += 1
        self._order.cleared()

    def transfer(self, src_core: int, src: View, dst_core: int, dst: View) -> None:
        """Copy an sp view of one core to an sp view of another (send + recv, fresh tag)."""
        if src_core == dst_core:
            self.emit(src_core, "dma", dst, src)
            return
        tag = self._new_tag(src_core, dst_core)
        self.emit(src_core, "send", Imm(dst_core), src, Imm(tag))
        self.emit(dst_core, "recv", Imm(src_core), dst, Imm(tag))

    def multicast(self, src_core: int, src: View, dests: Sequence[tuple[int, View]]) -> None:
        """Copy an sp view of one core to sp views of other cores at once (one `mcast`, a
        recv on each; one tag, fresh for every pair)."""
        far = sorted((c, v) for c, v in dests if c != src_core)
        for c, v in dests:
            if c == src_core:
                self.emit(c, "dma", v, src)
        if len(far) < 2:
            for c, v in far:
                self.transfer(src_core, src, c, v)
            return
        tag = max(self._tags.get((src_core, c), 0) for c, _ in far)
        for c, _ in far:
            self._tags[(src_core, c)] = (tag + 1) % 65536
        self.emit(src_core, "mcast", CoreSet(tuple(c for c, _ in far)), src, Imm(tag))
        for c, v in far:
            self.emit(c, "recv", Imm(src_core), v, Imm(tag))

    def _new_tag(self, src_core: int, dst_core: int) -> int:
        tag = self._tags.get((src_core, dst_core), 0)
        self._tags[(src_core, dst_core)] = (tag + 1) % 65536
        return tag

    # ------------------------------------------------------------------ macros
    def holds(self, core: int, macro: int, ref: MacroRef, key: object) -> bool:
        """Does the window `ref` of the macro hold the static tile `key` right now?"""
        if key is None:
            return False
        want = (ref.r0, ref.r1, ref.c0, ref.c1, key)
        return any(
            (w.r0, w.r1, w.c0, w.c1, w.key) == want for w in self._macros.get((core, macro), [])
        )

    def mload(
        self,
        core: int,
        macro: int,
        r0: int,
        c0: int,
        src: View,
        key: object = None,
        transpose: bool = False,
    ) -> MacroRef:
        """Write `src` (or its transpose) at (r0, c0) of a macro, unless the window already
        holds `key` (a static tile: pass a key; run-time data: key None always loads)."""
        r, c = (src.cols, src.rows) if transpose else (src.rows, src.cols)
        ref = MacroRef(macro, r0, r0 + r, c0, c0 + c)
        if self.holds(core, macro, ref, key):
            return ref
        self._forget(core, ref)
        self._macros[(core, macro)].append(_Window(ref.r0, ref.r1, ref.c0, ref.c1, key))
        self.emit(core, "mload.t" if transpose else "mload", ref, src)
        return ref

    def mload_masked(
        self,
        core: int,
        macro: int,
        r0: int,
        c0: int,
        src: View,
        index: View,
        transpose: bool = False,
    ) -> MacroRef:
        """Write the rows of `src` that `index` names (as the window's columns with
        `transpose`; run-time data: always emitted; the window holds no static tile
        afterwards)."""
        r, c = (src.cols, src.rows) if transpose else (src.rows, src.cols)
        ref = MacroRef(macro, r0, r0 + r, c0, c0 + c)
        self._forget(core, ref)
        self.emit(core, "mload.t.m" if transpose else "mload.m", ref, src, index)
        return ref

    def _forget(self, core: int, ref: MacroRef) -> None:
        """The windows of the macro that `ref` overlaps no longer hold their tiles."""
        windows = self._macros.setdefault((core, ref.index), [])
        windows[:] = [
            w
            for w in windows
            if w.r1 <= ref.r0 or ref.r1 <= w.r0 or w.c1 <= ref.c0 or ref.c1 <= w.c0
        ]

    # ------------------------------------------------------------------ output
    def build(
        self, source_name: str = "<program>", consts_file: str | None = None
    ) -> tuple[Program, dict[str, np.ndarray]]:
        streams = []
        for core in sorted(self._cores):
            items = (*self._cores[core].items, Instr("halt", ()))
            streams.append(CoreStream(core, items))
        if not streams:
            streams.append(CoreStream(self.chip_cores[0], (Instr("halt", ()),)))
        cf = consts_file if self.consts else None
        program = Program(
            self.arch.name, cf, tuple(self.header), tuple(streams), source_name=source_name
        )
        return program, dict(self.consts)

    def write(self, path: Path) -> tuple[Program, Path, Path | None]:
        """Write PATH (.cimasm) and, when there are constants, PATH.safetensors beside it
        (atomically, the program recording the constants' hash: cimc.machine.artifact)."""
        from cimc.machine.artifact import write_artifact

        consts_path = path.with_suffix(".safetensors") if self.consts else None
        program, consts = self.build(str(path), consts_path.name if consts_path else None)
        write_artifact([(path, program)], consts, consts_path, {})
        return program, path, consts_path

    def instruction_count(self) -> int:
        return self._instrs


@dataclass
class Scratch:
    """Scratchpad buffers of one core, freed together (see ProgramBuilder.scratch)."""

    builder: ProgramBuilder
    core: int
    views: list[View] = field(default_factory=list)

    def __call__(self, dtype: DType, r: int, c: int) -> View:
        v = self.builder.alloc(self.core, dtype, r, c)
        self.views.append(v)
        return v

    def like(self, view: View, dtype: DType | None = None) -> View:
        return self(dtype or view.dtype, view.rows, view.cols)
