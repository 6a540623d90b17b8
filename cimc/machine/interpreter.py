"""The bit-exact reference interpreter: runs a parsed `Program` on an `Arch` with numpy.

Cores run their streams in order; the interpreter runs core 0 until it blocks (a recv
whose send has not executed, a barrier not every core reached) or halts, then core 1, ...
round robin. When no live core can progress, that is a deadlock error naming each core's
instruction. Every run-time error is a `CimcError` at the instruction's `FILE:LINE:COL`,
naming the core.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from cimc.errors import CimcError
from cimc.gc_pause import gc_paused
from cimc.machine import semantics  # noqa: F401  (registers the kernels in the opcode table)
from cimc.machine.arch import Arch
from cimc.machine.consts_file import load_consts, shape_fits
from cimc.machine.kernels import KernelError
from cimc.machine.opcodes import DYNAMIC, KERNELS, spec_of
from cimc.machine.printer import print_operand
from cimc.machine.program import Decl, Instr, MacroRef, Program
from cimc.machine.state import NP_DTYPES, CoreState, Machine
from cimc.progress import poll

# Simulated memory the interpreter allocates at most (isa/SPEC.md, section 7).
MAX_MACHINE_BYTES = 4 << 30


@dataclass(frozen=True)
class TraceEvent:
    """One executed instruction; `writes` are copies of its destination views afterwards."""

    step: int
    core: int
    pc: int
    instr: Instr
    writes: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class MacroCells:
    """A macro's int8 cells and written bits, carried between runs by `.persist`."""

    weights: np.ndarray
    written: np.ndarray


@dataclass(frozen=True)
class RunStats:
    steps: int
    opcode_counts: dict[str, int]  # sorted by opcode
    macs: int


@dataclass(frozen=True)
class RunResult:
    outputs: dict[str, np.ndarray]  # declaration order
    trace: list[TraceEvent] = field(default_factory=list)
    stats: RunStats = field(default_factory=lambda: RunStats(0, {}, 0))
    state: dict[str, np.ndarray] = field(default_factory=dict)  # `.state` contents at the end
    macros: dict[tuple[int, int], MacroCells] = field(default_factory=dict)  # `.persist`ed
    # the index column each data-dependent instruction read, by (core, pc): the cost model
    # prices this run with it (cimc/machine/dynamic.py)
    dynamic: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)


def run_program(
    program: Program,
    arch: Arch,
    inputs: dict[str, np.ndarray],
    consts: dict[str, np.ndarray] | None = None,
    trace: bool = False,
    state: dict[str, np.ndarray] | None = None,
    macros: dict[tuple[int, int], MacroCells] | None = None,
) -> RunResult:
    """Run `program` to completion and return its outputs (one 2-D array per `.output`).

    `inputs` maps every `.input` name to an array of its dtype and shape (leading unit
    dimensions allowed). `consts` defaults to the program's companion safetensors file.
    With `trace`, the result lists every executed instruction in execution order with a
    copy of what it wrote (for locating the first divergence from the golden). `state`
    gives the starting contents of `.state` declarations (zero when absent); the result's
    `state` holds their contents after the run (e.g. a KV cache carried to the next run).
    `macros` likewise gives the `.persist`ed macros' cells by (core, macro), as a previous
    run's result returned them (unwritten when absent).
    Static rules are the validator's job (`validate(program, arch)`, run by the CLI first);
    everything that can only be known at run time is checked here.
    """
    machine = Machine.create(arch, _core_states(program, arch), memory_extents(program))
    if consts is None:
        consts = load_consts(program)
    _place_consts(machine, program, consts)
    _place_inputs(machine, program, inputs)
    _place_state(machine, program, state or {})
    _place_macros(machine, program, macros or {})
    events: list[TraceEvent] = []
    total = sum(len(cs.instrs) for cs in machine.cores)
    with poll("interpret", total, lambda: sum(cs.pc for cs in machine.cores)), gc_paused():
        _run(machine, program, events if trace else None)
        machine.drop_caches()  # freed while collection is off (see Machine.drop_caches)
    counts = _executed(machine)
    outputs = {d.name: _read_decl(machine, d) for d in program.decls_of("output")}
    stats = RunStats(sum(counts.values()), dict(sorted(counts.items())), machine.macs)
    kept = {d.name: _read_decl(machine, d) for d in program.decls_of("state")}
    cells = {
        (p.core, p.macro): MacroCells(s.weights.copy(), s.mask())
        for p in program.persists
        if (s := machine.macros.get((p.core, p.macro))) is not None
    }
    return RunResult(outputs, events, stats, kept, cells, dict(machine.dynamic))


# --- setup ---------------------------------------------------------------------------------


def memory_extents(program: Program) -> dict[str, int]:
    """Bytes of each space the program can touch: one past the end of its last declaration
    or view there (sp: over all cores). Refuses programs above the interpreter's budget."""
    ends = dict(program.extents)
    total = sum(ends.values()) + ends.get("sp", 0) * (len(program.cores) - 1)
    if total > MAX_MACHINE_BYTES:
        raise CimcError(
            f"the program addresses {total:,} bytes of memory (all cores' sp, gb, dram, "
            f"flash); the reference interpreter runs at most {MAX_MACHINE_BYTES:,}",
            program.source_name,
        )
    return ends


def _core_states(program: Program, arch: Arch) -> list[CoreState]:
    states = []
    for stream in program.cores:
        if not 0 <= stream.core < arch.chip.cores:
            raise CimcError(
                f"core {stream.core} does not exist on '{arch.name}' ({arch.chip.cores} cores)",
                f"{program.source_name}:{stream.line}:1",
            )
        states.append(CoreState(stream.core, stream.instrs))
    return sorted(states, key=lambda s: s.core)


def _decl_array(machine: Machine, program: Program, decl: Decl) -> np.ndarray:
    mem = machine.shared.get(decl.space)
    loc = program.loc(decl)
    if mem is None:
        raise CimcError(f"{decl.name} must live in gb, dram or flash, not {decl.space}", loc)
    if decl.addr < 0 or decl.end > mem.size:  # memories cover every declaration
        raise CimcError(
            f"{decl.name} ({decl.addr:#x}..{decl.end:#x}) is outside {decl.space} "
            f"({machine.arch.space_bytes(decl.space)} bytes on '{machine.arch.name}')",
            loc,
        )
    if decl.dtype is None:
        return mem[decl.addr : decl.end]
    return np.ndarray((decl.rows, decl.cols), NP_DTYPES[decl.dtype], buffer=mem, offset=decl.addr)


def _fit(name: str, what: str, array: np.ndarray, decl: Decl, loc: str) -> np.ndarray:
    """Check dtype and shape of user data against its declaration; return it as R x C."""
    assert decl.dtype is not None
    want = NP_DTYPES[decl.dtype]
    declared = f"{decl.dtype}[{decl.rows}x{decl.cols}]"
    if array.dtype.newbyteorder("<") != want:
        raise CimcError(
            f"{what} '{name}' has dtype {array.dtype}; the program declares {declared}", loc
        )
    if not shape_fits(array.shape, decl):
        raise CimcError(
            f"{what} '{name}' has shape {tuple(array.shape)}; the program declares {declared}", loc
        )
    return array.reshape(decl.rows, decl.cols)


def _place_consts(machine: Machine, program: Program, consts: dict[str, np.ndarray]) -> None:
    for decl in program.decls_of("const"):
        loc = program.loc(decl)
        if decl.name not in consts:
            raise CimcError(f"constant '{decl.name}' is missing from the constants file", loc)
        data = _fit(decl.name, "constant", np.asarray(consts[decl.name]), decl, loc)
        target = _decl_array(machine, program, decl)  # bounds checked for every space
        if decl.space == "flash":
            machine.flash_consts.add(decl.addr, data)  # read in place (cimc/machine/flash.py)
        else:
            target[...] = data


def _place_inputs(machine: Machine, program: Program, inputs: dict[str, np.ndarray]) -> None:
    declared = program.decls_of("input")
    names = [d.name for d in declared]
    extra = sorted(set(inputs) - set(names))
    if extra:
        raise CimcError(
            f"unknown input '{extra[0]}'; the program's inputs are: {', '.join(names) or 'none'}",
            program.source_name,
        )
    for decl in declared:
        loc = program.loc(decl)
        if decl.name not in inputs:
            raise CimcError(f"input '{decl.name}' is missing", loc)
        data = _fit(decl.name, "input", np.asarray(inputs[decl.name]), decl, loc)
        _decl_array(machine, program, decl)[...] = data
    for decl in program.decls_of("region"):
        _decl_array(machine, program, decl)  # bounds check; memories start zeroed


def _place_state(machine: Machine, program: Program, state: dict[str, np.ndarray]) -> None:
    """Persistent `.state` declarations start from the caller's arrays (zero when absent)."""
    names = [d.name for d in program.decls_of("state")]
    extra = sorted(set(state) - set(names))
    if extra:
        raise CimcError(
            f"unknown state '{extra[0]}'; the program's states are: {', '.join(names) or 'none'}",
            program.source_name,
        )
    for decl in program.decls_of("state"):
        target = _decl_array(machine, program, decl)
        if decl.name in state:
            loc = program.loc(decl)
            target[...] = _fit(decl.name, "state", np.asarray(state[decl.name]), decl, loc)


def _place_macros(
    machine: Machine, program: Program, macros: dict[tuple[int, int], MacroCells]
) -> None:
    """`.persist`ed macros start with the cells a previous run handed back."""
    declared = {(p.core, p.macro) for p in program.persists}
    for key in sorted(macros):
        if key not in declared:
            raise CimcError(
                f"macro m{key[1]} of core {key[0]} is given but the program does not "
                f"declare '.persist {key[0]} m{key[1]}'",
                program.source_name,
            )
        cells = macros[key]
        state = machine.macro(key[0], MacroRef(key[1], 0, 1, 0, 1))
        state.restore(cells.weights, cells.written)


def _read_decl(machine: Machine, decl: Decl) -> np.ndarray:
    mem = machine.shared[decl.space]
    assert decl.dtype is not None
    shape = (decl.rows, decl.cols)
    return np.ndarray(shape, NP_DTYPES[decl.dtype], buffer=mem, offset=decl.addr).copy()


# --- execution -----------------------------------------------------------------------------


def _run(machine: Machine, program: Program, events: list[TraceEvent] | None) -> None:
    """Round robin over the cores until all halt; no progress in a full round = deadlock.

    A core whose recv found its FIFO empty is skipped until a message is there, instead of
    retrying the recv every round."""
    fifos = machine.fifos
    while True:
        progress = False
        for cs in machine.cores:
            if cs.halted:
                continue
            if cs.waits_on is not None:
                if not fifos.get(cs.waits_on):
                    continue
                cs.waits_on = None
            start = cs.pc
            _run_core(machine, program, cs, events)
            progress = progress or cs.pc > start
        if all(cs.halted for cs in machine.cores):
            return
        if not progress:
            raise _deadlock(machine, program)


def _run_core(
    machine: Machine, program: Program, cs: CoreState, events: list[TraceEvent] | None
) -> None:
    """Run one core until it blocks (a kernel returns False) or halts. This loop runs once
    per instruction (10^5 times for BERT-base), so it keeps the program counter in a local and
    writes it back when the core stops: what it does per step is what the interpreter
    costs beyond numpy."""
    kernels, instrs, pc, end = KERNELS, cs.instrs, cs.pc, len(cs.instrs)
    try:
        while pc < end:
            instr = instrs[pc]
            if instr.opcode in DYNAMIC:
                cs.pc = pc  # the kernel records its index column under (core, pc)
            if not kernels[instr.opcode](machine, cs, instr):
                return
            if events is not None:
                cs.pc = pc  # the event records where it ran
                events.append(_event(machine, cs, instr, len(events)))
            pc += 1
            if cs.halted:
                return
        where = f"{program.source_name}:{instrs[-1].line if instrs else 1}:1"
        raise CimcError(f"core {cs.core}: stream ends without halt", where)
    except KernelError as e:
        raise CimcError(f"core {cs.core}: {instr.opcode}: {e}", program.loc(instr)) from None
    except MemoryError:  # operands are bounded (arch limits), but the host may be smaller
        raise CimcError(
            f"core {cs.core}: {instr.opcode}: the host ran out of memory for its operands",
            program.loc(instr),
        ) from None
    finally:
        cs.pc = pc


def _executed(machine: Machine) -> Counter[str]:
    """Opcodes executed: each core ran its stream up to its program counter, in order."""
    counts: Counter[str] = Counter()
    for cs in machine.cores:
        counts.update(instr.opcode for instr in cs.instrs[: cs.pc])
    return counts


def _event(machine: Machine, cs: CoreState, instr: Instr, step: int) -> TraceEvent:
    writes = tuple(machine.array(cs.core, v).copy() for v in spec_of(instr).writes(instr))
    return TraceEvent(step, cs.core, cs.pc, instr, writes)


def _deadlock(machine: Machine, program: Program) -> CimcError:
    waiting = [cs for cs in machine.cores if not cs.halted]
    parts = [
        f"core {cs.core} waits at line {cs.instrs[cs.pc].line} `{instr_text(cs.instrs[cs.pc])}`"
        for cs in waiting
    ]
    first = waiting[0].instrs[waiting[0].pc]
    return CimcError("deadlock: " + "; ".join(parts), program.loc(first))


def instr_text(instr: Instr) -> str:
    """`opcode operands` on one line, without indentation or comment (for messages)."""
    return f"{instr.opcode} {', '.join(print_operand(op) for op in instr.operands)}".rstrip()
