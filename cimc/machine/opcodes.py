"""THE opcode table: one entry per instruction drives parser checks, printer, interpreter, cost.

Each `OpSpec` gives the operand signature (kind, allowed spaces and dtypes, read/write access),
the functional unit, and a shape rule that checks operand agreement and sizes `mN` windows.
The interpreter and the cost model register their implementations here by mnemonic
(`register_kernel`, `register_cost`); `missing_implementations()` lists the gaps and a test
requires it to be empty.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cimc.machine.program import (
    DTYPES,
    SPACES,
    CoreSet,
    DType,
    Imm,
    Instr,
    MacroRef,
    Operand,
    Space,
    View,
)
from cimc.machine.shape_rules import (
    I64_MAX,
    I64_MIN,
    OperandError,
    rule_binary,
    rule_convert,
    rule_copy,
    rule_div,
    rule_dma_masked,
    rule_fill,
    rule_gather,
    rule_gather_masked,
    rule_lut,
    rule_mcast,
    rule_mload,
    rule_mload_masked,
    rule_mload_t,
    rule_mload_t_masked,
    rule_mvm,
    rule_mvm_i4,
    rule_none,
    rule_nonzero_index,
    rule_reduce,
    rule_req,
    rule_scatter,
    rule_sel,
    rule_sendrecv,
    rule_shift,
    rule_transpose,
)


class Unit(StrEnum):
    """Functional unit class an instruction occupies (the cost model's resources)."""

    DMA = "dma"
    NOC = "noc"
    MACRO = "macro"
    VECTOR = "vector"
    SYNC = "sync"


class Kind(StrEnum):
    VIEW = "view"
    MACRO = "macro"
    IMM = "imm"
    VIEW_OR_IMM = "view or immediate"
    CORE = "core id"
    CORES = "core set"
    TAG = "tag"


class Access(StrEnum):
    READ = "r"
    WRITE = "w"
    READWRITE = "rw"
    NONE = "-"


@dataclass(frozen=True)
class OperandSpec:
    name: str
    kind: Kind
    access: Access = Access.READ
    spaces: tuple[Space, ...] = ("sp",)
    dtypes: tuple[DType, ...] = DTYPES


Rule = Callable[[tuple[Operand, ...]], tuple[Operand, ...]]


@dataclass(frozen=True)
class OpSpec:
    mnemonic: str
    unit: Unit
    operands: tuple[OperandSpec, ...]
    rule: Rule
    summary: str
    # The cost depends on run-time data: the interpreter records the index column the
    # instruction read (cimc/machine/dynamic.py) and the cost model prices that run's rows.
    dynamic: bool = False

    def views(self, instr: Instr) -> tuple[tuple[View, Access], ...]:
        """Every view operand of `instr` with its access (for dataflow, races, dependences)."""
        return tuple(
            (op, spec.access)
            for op, spec in zip(instr.operands, self.operands, strict=True)
            if isinstance(op, View)
        )

    def reads(self, instr: Instr) -> tuple[View, ...]:
        return tuple(v for v, a in self.views(instr) if a in (Access.READ, Access.READWRITE))

    def writes(self, instr: Instr) -> tuple[View, ...]:
        return tuple(v for v, a in self.views(instr) if a in (Access.WRITE, Access.READWRITE))

    def macro(self, instr: Instr) -> tuple[MacroRef, Access] | None:
        for op, spec in zip(instr.operands, self.operands, strict=True):
            if isinstance(op, MacroRef):
                return op, spec.access
        return None


# --- operand signature helpers -------------------------------------------------------------

ALL_SPACES: tuple[Space, ...] = SPACES
WRITABLE: tuple[Space, ...] = ("sp", "gb", "dram")


def _dst(name: str = "dst", dtypes: tuple[DType, ...] = DTYPES) -> OperandSpec:
    return OperandSpec(name, Kind.VIEW, Access.WRITE, ("sp",), dtypes)


def _src(name: str, dtypes: tuple[DType, ...] = DTYPES) -> OperandSpec:
    return OperandSpec(name, Kind.VIEW, Access.READ, ("sp",), dtypes)


def _src_or_imm(name: str) -> OperandSpec:
    return OperandSpec(name, Kind.VIEW_OR_IMM, Access.READ)


def _imm(name: str) -> OperandSpec:
    return OperandSpec(name, Kind.IMM, Access.NONE)


# --- the table -----------------------------------------------------------------------------

_I8: tuple[DType, ...] = ("i8",)
_I32: tuple[DType, ...] = ("i32",)
_CORE = OperandSpec("core", Kind.CORE, Access.NONE)
_TAG = OperandSpec("tag", Kind.TAG, Access.NONE)


def _binary(mnemonic: str, summary: str, rule: Rule = rule_binary, b: str = "b") -> OpSpec:
    ops = (_dst(), _src("a"), _src_or_imm(b))
    return OpSpec(mnemonic, Unit.VECTOR, ops, rule, summary)


def _unary(mnemonic: str, summary: str, rule: Rule, a: str = "a") -> OpSpec:
    return OpSpec(mnemonic, Unit.VECTOR, (_dst(), _src(a)), rule, summary)


_SPECS: tuple[OpSpec, ...] = (
    # data movement
    OpSpec(
        "dma",
        Unit.DMA,
        (
            OperandSpec("dst", Kind.VIEW, Access.WRITE, WRITABLE),
            OperandSpec("src", Kind.VIEW, Access.READ, ALL_SPACES),
        ),
        rule_copy,
        "copy a view to a view of the same dtype and shape between any memories",
    ),
    OpSpec(
        "gather",
        Unit.DMA,
        (
            _dst(),
            OperandSpec("table", Kind.VIEW, Access.READ, ALL_SPACES),
            _src("index"),
        ),
        rule_gather,
        "dst row i = table row index[i, 0] (embedding lookup)",
    ),
    OpSpec(
        "gather.m",
        Unit.DMA,
        (
            _dst(),
            OperandSpec("table", Kind.VIEW, Access.READ, ALL_SPACES),
            _src("index"),
        ),
        rule_gather_masked,
        "dst row i = table row index[i, 0], or zeros where index[i, 0] < 0 (not read)",
        dynamic=True,
    ),
    OpSpec(
        "dma.m",
        Unit.DMA,
        (
            OperandSpec("dst", Kind.VIEW, Access.WRITE, WRITABLE),
            OperandSpec("src", Kind.VIEW, Access.READ, ALL_SPACES),
            _src("index"),
        ),
        rule_dma_masked,
        "dst row index[i, 0] = src row index[i, 0] where index[i, 0] >= 0 (others kept)",
        dynamic=True,
    ),
    OpSpec(
        "scatter",
        Unit.DMA,
        (
            OperandSpec("table", Kind.VIEW, Access.WRITE, WRITABLE),
            _src("src"),
            _src("index"),
        ),
        rule_scatter,
        "table row index[i, 0] = src row i (e.g. append to a KV cache at a run-time position)",
    ),
    OpSpec("send", Unit.NOC, (_CORE, _src("src"), _TAG), rule_sendrecv, "send a view to a core"),
    OpSpec(
        "recv",
        Unit.NOC,
        (_CORE, _dst(), _TAG),
        rule_sendrecv,
        "receive a view from a core (blocks until the matching send or mcast)",
    ),
    OpSpec(
        "mcast",
        Unit.NOC,
        (OperandSpec("cores", Kind.CORES, Access.NONE), _src("src"), _TAG),
        rule_mcast,
        "send a view to every core of a set at once (NoC multicast)",
    ),
    OpSpec("barrier", Unit.SYNC, (), rule_none, "wait until every core reaches this barrier"),
    OpSpec("halt", Unit.SYNC, (), rule_none, "end of the core's stream"),
    # macro
    OpSpec(
        "mload",
        Unit.MACRO,
        (
            OperandSpec("macro", Kind.MACRO, Access.WRITE),
            OperandSpec("src", Kind.VIEW, Access.READ, ("sp", "gb"), _I8),
        ),
        rule_mload,
        "write an int8 view into a macro window",
    ),
    OpSpec(
        "mload.t",
        Unit.MACRO,
        (
            OperandSpec("macro", Kind.MACRO, Access.WRITE),
            OperandSpec("src", Kind.VIEW, Access.READ, ("sp", "gb"), _I8),
        ),
        rule_mload_t,
        "write the transpose of an int8 view into a macro window",
    ),
    OpSpec(
        "mload.m",
        Unit.MACRO,
        (
            OperandSpec("macro", Kind.MACRO, Access.WRITE),
            OperandSpec("src", Kind.VIEW, Access.READ, ("sp", "gb"), _I8),
            _src("index"),
        ),
        rule_mload_masked,
        "write the rows i of an int8 view whose index[i, 0] >= 0 into a macro window",
        dynamic=True,
    ),
    OpSpec(
        "mload.t.m",
        Unit.MACRO,
        (
            OperandSpec("macro", Kind.MACRO, Access.WRITE),
            OperandSpec("src", Kind.VIEW, Access.READ, ("sp", "gb"), _I8),
            _src("index"),
        ),
        rule_mload_t_masked,
        "write the rows i of an int8 view whose index[i, 0] >= 0 into the columns i of a "
        "macro window",
        dynamic=True,
    ),
    OpSpec(
        "mvm",
        Unit.MACRO,
        (_dst(dtypes=_I32), _src("src", _I8), OperandSpec("macro", Kind.MACRO, Access.READ)),
        rule_mvm,
        "dst = src @ window (int8 x int8 -> int32)",
    ),
    OpSpec(
        "mvm.acc",
        Unit.MACRO,
        (
            OperandSpec("dst", Kind.VIEW, Access.READWRITE, ("sp",), _I32),
            _src("src", _I8),
            OperandSpec("macro", Kind.MACRO, Access.READ),
        ),
        rule_mvm,
        "dst += src @ window",
    ),
    OpSpec(
        "mvm.i4",
        Unit.MACRO,
        (_dst(dtypes=_I32), _src("src", _I8), OperandSpec("macro", Kind.MACRO, Access.READ)),
        rule_mvm_i4,
        "dst = src @ unpack4(window): every cell holds two int4 weights (int8 x int4 -> int32)",
    ),
    OpSpec(
        "mvm.i4.acc",
        Unit.MACRO,
        (
            OperandSpec("dst", Kind.VIEW, Access.READWRITE, ("sp",), _I32),
            _src("src", _I8),
            OperandSpec("macro", Kind.MACRO, Access.READ),
        ),
        rule_mvm_i4,
        "dst += src @ unpack4(window)",
    ),
    # vector unit
    _binary("add", "dst = a + b"),
    _binary("sub", "dst = a - b"),
    _binary("mul", "dst = a * b"),
    _binary("max", "dst = max(a, b)"),
    _binary("min", "dst = min(a, b)"),
    _binary("shl", "dst = a << s", rule_shift, "s"),
    _binary("rshr", "dst = (a + 2^(s-1)) >> s", rule_shift, "s"),
    _binary("div", "dst = floor(a / b), b > 0", rule_div),
    OpSpec(
        "req",
        Unit.VECTOR,
        (
            _dst(),
            _src("a"),
            _src_or_imm("m"),
            _src_or_imm("s"),
            _src_or_imm("zp"),
            _imm("lo"),
            _imm("hi"),
        ),
        rule_req,
        "dst = clamp(rshr(a * m, s) + zp, lo, hi)",
    ),
    _unary("isqrt", "dst = floor(sqrt(a)), a >= 0", rule_convert),
    OpSpec(
        "lut",
        Unit.VECTOR,
        (_dst(), _src("a", _I8), _src("table")),
        rule_lut,
        "dst = table[0, a + 128]",
    ),
    _unary("rsum", "dst[r, 0] = sum of row r (int64)", rule_reduce),
    _unary("rmax", "dst[r, 0] = max of row r", rule_reduce),
    OpSpec(
        "sel",
        Unit.VECTOR,
        (_dst(), _src_or_imm("cond"), _src_or_imm("a"), _src_or_imm("b")),
        rule_sel,
        "dst = cond != 0 ? a : b",
    ),
    _unary("mov", "dst = src (dtype conversion, range-checked)", rule_convert, "src"),
    _unary("transpose", "dst = src^T", rule_transpose, "src"),
    OpSpec("fill", Unit.VECTOR, (_dst(), _imm("value")), rule_fill, "dst = value"),
    OpSpec(
        "nzidx",
        Unit.VECTOR,
        (_dst(dtypes=("i16", "i32", "i64")), _src("a")),
        rule_nonzero_index,
        "dst = the columns of a holding a non-zero element, ascending, then -1s",
    ),
)

OPCODES: dict[str, OpSpec] = {spec.mnemonic: spec for spec in _SPECS}
DYNAMIC: frozenset[str] = frozenset(s.mnemonic for s in _SPECS if s.dynamic)


_KIND_TYPES: dict[Kind, tuple[type, ...]] = {
    Kind.VIEW: (View,),
    Kind.MACRO: (MacroRef,),
    Kind.VIEW_OR_IMM: (View, Imm),
    Kind.IMM: (Imm,),
    Kind.CORE: (Imm,),
    Kind.CORES: (CoreSet,),
    Kind.TAG: (Imm,),
}
_KIND_TEXT = {
    Kind.VIEW: "a view SPACE[ADDR]:DTYPE[RxC]",
    Kind.MACRO: "a macro mN or mN[r0:r1,c0:c1]",
    Kind.VIEW_OR_IMM: "a view or an integer",
    Kind.CORES: "a core set {A,B-C}",
}
_OPERAND_TEXT = {View: "a view", MacroRef: "a macro", Imm: "an integer", CoreSet: "a core set"}


def _check_operand(want: OperandSpec, op: Operand, i: int) -> None:
    if not isinstance(op, _KIND_TYPES[want.kind]):
        kind = _KIND_TEXT.get(want.kind, f"an integer ({want.kind.value})")
        raise OperandError(f"must be {kind}, not {_OPERAND_TEXT[type(op)]}", i)
    if isinstance(op, Imm) and not I64_MIN <= op.value <= I64_MAX:
        raise OperandError(f"immediate {op.value} does not fit in int64", i)
    if not isinstance(op, View):
        return
    if op.space not in want.spaces:
        if op.space == "flash" and want.access != Access.READ:
            raise OperandError("flash is read-only at run time; write to sp, gb or dram", i)
        raise OperandError(f"must be in {' or '.join(want.spaces)}, not {op.space}", i)
    if op.dtype not in want.dtypes:
        raise OperandError(f"must be {' or '.join(want.dtypes)}, not {op.dtype}", i)


def check_operands(spec: OpSpec, operands: tuple[Operand, ...]) -> tuple[Operand, ...]:
    """Check arity, kinds, spaces, dtypes and the shape rule; returns the operands with bare
    `mN` windows sized. Raises OperandError (index None: wrong arity)."""
    if len(operands) != len(spec.operands):
        names = ", ".join(o.name for o in spec.operands) or "none"
        raise OperandError(
            f"takes {len(spec.operands)} operands ({names}), got {len(operands)}", None
        )
    for i, (want, op) in enumerate(zip(spec.operands, operands, strict=True)):
        _check_operand(want, op, i)
    return spec.rule(operands)


def describe_error(spec: OpSpec, e: OperandError) -> str:
    """`'add' operand 3 (b): ...` — the one wording of operand errors."""
    if e.index is None:
        return f"'{spec.mnemonic}' {e.message}"
    return f"'{spec.mnemonic}' operand {e.index + 1} ({spec.operands[e.index].name}): {e.message}"


def opspec(mnemonic: str) -> OpSpec:
    """The table entry of `mnemonic` (KeyError if unknown: the parser checks first)."""
    return OPCODES[mnemonic]


def spec_of(instr: Instr) -> OpSpec:
    return OPCODES[instr.opcode]


# --- implementation registries (filled by interpreter.py and cost.py on import) -------------

# The interpreter and cost model define their own call signatures; the table only guarantees
# that every opcode has one of each.
KERNELS: dict[str, Callable[..., Any]] = {}
COSTS: dict[str, Callable[..., Any]] = {}

_F = Callable[..., Any]


def _register(registry: dict[str, _F], what: str, mnemonics: tuple[str, ...]) -> Callable[[_F], _F]:
    def decorate(fn: _F) -> _F:
        for m in mnemonics:
            if m not in OPCODES:
                raise KeyError(f"cannot register a {what} for unknown opcode {m!r}")
            if m in registry and registry[m] is not fn:
                raise KeyError(f"opcode {m!r} already has a {what}: {registry[m].__qualname__}")
            registry[m] = fn
        return fn

    return decorate


def register_kernel(*mnemonics: str) -> Callable[[_F], _F]:
    """Decorator: `@register_kernel("add", "sub")` makes fn the interpreter kernel of each."""
    return _register(KERNELS, "kernel", mnemonics)


def register_cost(*mnemonics: str) -> Callable[[_F], _F]:
    """Decorator: `@register_cost("mvm", "mvm.acc")` makes fn the cost function of each."""
    return _register(COSTS, "cost function", mnemonics)


def missing_implementations() -> dict[str, tuple[str, ...]]:
    """Opcodes without a kernel / cost function (import interpreter and cost first)."""
    return {
        "kernel": tuple(m for m in OPCODES if m not in KERNELS),
        "cost": tuple(m for m in OPCODES if m not in COSTS),
    }
