"""Static checks of a parsed program against an architecture, before it runs.

`validate(program, arch)` raises the first problem as a CimcError at `FILE:LINE:COL` of the
offending instruction or declaration (messages name the core). Checks, in order: the arch
name, the `.consts` path, declarations (range, alignment, overlap), core sections (ids, halt),
every instruction (the opcode table's operand rules, views in range / aligned / inside their
symbol, macro index and window, no MVM over cells never written on that core), then the sync
skeleton (send/recv matching, barrier counts, deadlock, gb/dram races; see sync.py).
"""

from __future__ import annotations

import bisect
import posixpath

import numpy as np

from cimc.errors import CimcError
from cimc.machine.arch import Arch
from cimc.machine.opcodes import OPCODES, Access, OperandError, check_operands, describe_error
from cimc.machine.program import SENDS, Decl, Imm, Instr, MacroRef, Program, View, destinations
from cimc.machine.sync import check_sync


def validate(program: Program, arch: Arch) -> None:
    """Raise CimcError on the first static error; return None when the program is valid."""
    _check_arch(program, arch)
    _check_consts_path(program)
    _check_decls(program, arch)
    _check_cores(program, arch)
    for stream in program.cores:
        _StreamChecker(program, arch, stream.core).run(stream.instrs)
    check_sync(program)


def _at(program: Program, line: int, col: int = 1) -> str:
    return f"{program.source_name}:{line}:{col}"


def _check_arch(program: Program, arch: Arch) -> None:
    if program.arch_name != arch.name:
        raise CimcError(
            f"program was compiled for arch {program.arch_name!r}, not {arch.name!r}; "
            f"validate it with --arch {program.arch_name} or recompile",
            _at(program, 1),
        )


def consts_path_problem(path: str) -> str | None:
    """Why a `.consts` path is unsafe (absolute, or leaving the program's folder), or None."""
    if not path or path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":"):
        return "must be a relative path"
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return "contains a control character"
    norm = posixpath.normpath(path.replace("\\", "/"))
    if norm == ".." or norm.startswith("../") or norm == ".":
        return "must name a file inside the program's folder"
    return None


def _check_consts_path(program: Program) -> None:
    if program.consts_file is None:
        return
    problem = consts_path_problem(program.consts_file)
    if problem:
        raise CimcError(
            f"constants file {program.consts_file!r} {problem}; put it beside the program",
            _at(program, program.consts_line, 9),
        )


def _range_problem(space: str, addr: int, end: int, size: int, align: int) -> str | None:
    if addr % align:
        return f"address {addr:#x} is not aligned to {align} bytes; use a multiple of {align}"
    if addr < 0 or end > size:
        return f"[{addr:#x}, {end:#x}) does not fit the {size}-byte {space}"
    return None


def _check_decls(program: Program, arch: Arch) -> None:
    for d in program.decls:
        align = 1 if d.dtype is None else d.nbytes // (d.rows * d.cols)
        problem = _range_problem(d.space, d.addr, d.end, arch.space_bytes(d.space), align)
        if problem:
            raise CimcError(f".{d.kind} {d.name!r}: {problem}", _at(program, d.line, d.col))
    ordered = sorted(program.decls, key=lambda d: (d.space, d.addr, d.line))
    for prev, cur in zip(ordered, ordered[1:], strict=False):
        if cur.space == prev.space and cur.addr < prev.end:
            later, earlier = (cur, prev) if cur.line > prev.line else (prev, cur)
            raise CimcError(
                f"{later.name!r} [{later.addr:#x}, {later.end:#x}) overlaps {earlier.name!r} "
                f"[{earlier.addr:#x}, {earlier.end:#x}) declared at line {earlier.line}; "
                f"move one of them",
                _at(program, later.line, later.col),
            )
    for p in program.persists:
        if not (0 <= p.core < arch.chip.cores and 0 <= p.macro < arch.core.macros):
            raise CimcError(
                f".persist {p.core} m{p.macro}: arch {arch.name!r} has cores "
                f"0..{arch.chip.cores - 1} with macros m0..m{arch.core.macros - 1}",
                _at(program, p.line, p.col),
            )


def _check_cores(program: Program, arch: Arch) -> None:
    if not program.cores:
        raise CimcError("the program has no '.core N' section", _at(program, 1))
    for stream in program.cores:
        if not 0 <= stream.core < arch.chip.cores:
            raise CimcError(
                f"core {stream.core} does not exist: arch {arch.name!r} has cores "
                f"0..{arch.chip.cores - 1}",
                _at(program, stream.line, 7),
            )
        instrs = stream.instrs
        for instr, nxt in zip(instrs, instrs[1:], strict=False):
            if instr.opcode == "halt":
                raise CimcError(
                    f"core {stream.core}: instructions after 'halt' never run; "
                    f"move 'halt' to the end",
                    program.loc(nxt),
                )
        if not instrs or instrs[-1].opcode != "halt":
            where = instrs[-1] if instrs else None
            line, col = (where.line, where.col) if where else (stream.line, 1)
            raise CimcError(
                f"core {stream.core}: the stream does not end with 'halt'; add 'halt' as "
                f"its last instruction",
                _at(program, line, col),
            )


class _StreamChecker:
    """Per-instruction checks of one core's stream, with the macro cells written so far."""

    def __init__(self, program: Program, arch: Arch, core: int) -> None:
        self.program, self.arch, self.core = program, arch, core
        self.written: dict[int, np.ndarray] = {}
        shape = (arch.macro.rows, arch.macro.cols)
        for p in program.persists:  # kept from the previous run: checked at run time
            if p.core == core:
                self.written[p.macro] = np.ones(shape, dtype=bool)
        self.cores_present = {s.core for s in program.cores}
        consts = sorted((d.space, d.addr, d.end, d.name) for d in program.decls_of("const"))
        self.consts = {sp: [c[1:] for c in consts if c[0] == sp] for sp in ("gb", "dram")}

    def err(self, instr: Instr, message: str, operand: int | None = None) -> CimcError:
        col = None if operand is None else instr.operand_col(operand)
        return CimcError(f"core {self.core}: {message}", self.program.loc(instr, col))

    def operand_err(self, instr: Instr, i: int, message: str) -> CimcError:
        name = OPCODES[instr.opcode].operands[i].name
        return self.err(instr, f"'{instr.opcode}' operand {i + 1} ({name}): {message}", i)

    def run(self, instrs: tuple[Instr, ...]) -> None:
        for instr in instrs:
            self._check_table(instr)
            spec = OPCODES[instr.opcode]
            for i, op in enumerate(instr.operands):
                if isinstance(op, View):
                    self._check_view(instr, i, op)
                    if spec.operands[i].access != Access.READ:
                        self._check_not_const(instr, i, op)
                elif isinstance(op, MacroRef):
                    self._check_macro(instr, i, op)
            if instr.opcode in (*SENDS, "recv"):
                self._check_peers(instr)

    def _check_table(self, instr: Instr) -> None:
        """Re-run the opcode table's rules: programs built in Python skip the parser."""
        spec = OPCODES.get(instr.opcode)
        if spec is None:
            raise self.err(instr, f"unknown opcode {instr.opcode!r}")
        try:
            checked = check_operands(spec, instr.operands)
        except OperandError as e:
            raise self.err(instr, describe_error(spec, e), e.index) from None
        if checked != instr.operands:
            raise self.err(
                instr,
                "macro window mN was not sized from its operands; "
                "build the program through the parser or size r1/c1",
            )

    def _check_view(self, instr: Instr, i: int, view: View) -> None:
        size = self.arch.space_bytes(view.space)
        problem = _range_problem(view.space, view.addr, view.end, size, view.elem_bytes)
        if problem:
            raise self.operand_err(instr, i, f"{view.space} view {problem}")
        if view.symbol is not None:
            decl = self.program.decl(view.symbol)
            if decl is None or decl.space != view.space:
                raise self.operand_err(instr, i, f"undeclared symbol {view.symbol!r}")
            self._check_inside(instr, i, view, decl)

    def _check_inside(self, instr: Instr, i: int, view: View, decl: Decl) -> None:
        if view.addr < decl.addr or view.end > decl.end:
            raise self.operand_err(
                instr,
                i,
                f"view [{view.addr:#x}, {view.end:#x}) runs outside "
                f"{decl.name!r} [{decl.addr:#x}, {decl.end:#x})",
            )

    def _check_not_const(self, instr: Instr, i: int, view: View) -> None:
        """Constants are read-only: a run must not change what the next run starts from."""
        consts = self.consts.get(view.space)
        if not consts:
            return
        for lo, hi in view.row_ranges():
            k = bisect.bisect_right(consts, (hi,)) - 1  # the last const starting before hi
            if k >= 0 and consts[k][1] > lo:
                name = consts[k][2]
                raise self.operand_err(
                    instr, i, f"writes constant {name!r}; constants are read-only, use a .region"
                )

    def _check_macro(self, instr: Instr, i: int, ref: MacroRef) -> None:
        rows, cols = self.arch.macro.rows, self.arch.macro.cols
        if ref.index >= self.arch.core.macros:
            raise self.err(
                instr,
                f"macro m{ref.index} does not exist: a core has m0..m{self.arch.core.macros - 1}",
                i,
            )
        if ref.r1 > rows or ref.c1 > cols:
            raise self.err(
                instr,
                f"window m{ref.index}[{ref.r0}:{ref.r1},{ref.c0}:{ref.c1}] exceeds the "
                f"{rows}x{cols} macro; split the tile",
                i,
            )
        cells = self.written.setdefault(ref.index, np.zeros((rows, cols), dtype=bool))
        window = cells[ref.r0 : ref.r1, ref.c0 : ref.c1]
        if instr.opcode.startswith("mload"):
            window[...] = True
        elif not window.all():
            r, c = (int(x) for x in np.argwhere(~window)[0])
            raise self.err(
                instr,
                f"{instr.opcode} reads m{ref.index} cell ({ref.r0 + r}, {ref.c0 + c}) that no "
                f"earlier mload on this core wrote",
                i,
            )

    def _check_peers(self, instr: Instr) -> None:
        peer = instr.operands[0]  # recv and send: a core id; mcast: a core set
        for core in (peer.value,) if isinstance(peer, Imm) else destinations(instr):
            if core not in self.cores_present:
                raise self.err(
                    instr,
                    f"{instr.opcode} names core {core}, which has no '.core {core}' section",
                    0,
                )
