"""THE opcode table: one entry per instruction drives parser checks, printer, interpreter, cost.

Each `OpSpec` gives the operand signature (kind, allowed spaces and dtypes, read/write access),
the functional unit, and a shape rule that checks operand agreement and sizes `mN` windows.
The interpreter and the cost model register their implementations here by mnemonic
(`register_kernel`, `register_cost`); `missing_implementations()` lists the gaps and a test
requires it to be empty.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from cimc.machine.program import (
    DTYPES,
    SPACES,
    DType,
    Imm,
    Instr,
    MacroRef,
    Operand,
    Space,
    View,
    dtype_range,
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
    TAG = "tag"


class Access(StrEnum):
    READ = "r"
    WRITE = "w"
    READWRITE = "rw"
    NONE = "-"


TAG_MAX = 65535
SHIFT_MAX = 63
I64_MIN, I64_MAX = dtype_range("i64")


class OperandError(Exception):
    """A shape/dtype/value rule failed; `index` is the offending operand (None: whole instr)."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.index = index


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


# --- shape rules ---------------------------------------------------------------------------


def _view(ops: tuple[Operand, ...], i: int) -> View:
    op = ops[i]
    assert isinstance(op, View)  # the parser checked kinds before calling the rule
    return op


def _shape(shape: tuple[int, int]) -> str:
    return f"{shape[0]}x{shape[1]}"


def _same_shape(ops: tuple[Operand, ...], i: int, j: int = 0) -> None:
    a, b = _view(ops, i), _view(ops, j)
    if a.shape != b.shape:
        raise OperandError(
            f"shape {_shape(a.shape)} does not match operand {j + 1}'s {_shape(b.shape)}", i
        )


def _same_dtype(ops: tuple[Operand, ...], i: int, j: int = 0) -> None:
    a, b = _view(ops, i), _view(ops, j)
    if a.dtype != b.dtype:
        raise OperandError(f"dtype {a.dtype} does not match operand {j + 1}'s {b.dtype}", i)


def _broadcast(ops: tuple[Operand, ...], i: int, j: int = 0) -> None:
    """Operand i is an immediate or a view broadcastable (1xC, Rx1, 1x1, RxC) to operand j."""
    op = ops[i]
    if isinstance(op, Imm):
        return
    rows, cols = _view(ops, j).shape
    r, c = _view(ops, i).shape
    if r not in (1, rows) or c not in (1, cols):
        raise OperandError(
            f"shape {r}x{c} does not broadcast to {rows}x{cols}; use 1x{cols}, {rows}x1 or "
            f"{rows}x{cols}",
            i,
        )


def _imm_in(ops: tuple[Operand, ...], i: int, lo: int, hi: int, what: str) -> None:
    op = ops[i]
    if isinstance(op, Imm) and not lo <= op.value <= hi:
        raise OperandError(f"{what} {op.value} is out of range [{lo}, {hi}]", i)


def _rule_copy(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    _same_shape(ops, 1)
    _same_dtype(ops, 1)
    return ops


def _rule_convert(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    _same_shape(ops, 1)
    return ops


def _rule_transpose(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    dst, src = _view(ops, 0), _view(ops, 1)
    if dst.shape != (src.cols, src.rows):
        raise OperandError(
            f"destination {_shape(dst.shape)} must be the transpose of the source "
            f"{_shape(src.shape)}",
            0,
        )
    _same_dtype(ops, 1)
    return ops


def _rule_sendrecv(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    _imm_in(ops, 0, 0, I64_MAX, "core id")
    _imm_in(ops, 2, 0, TAG_MAX, "tag")
    return ops


def _rule_none(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    return ops


def _sized_window(macro: MacroRef, shape: tuple[int, int], i: int) -> MacroRef:
    """Give a bare `mN` the implied extent; check an explicit window against it."""
    if macro.whole:
        return replace(macro, r0=0, c0=0, r1=shape[0], c1=shape[1])
    if macro.shape != shape:
        want = f"m{macro.index}[{macro.r0}:{macro.r0 + shape[0]},{macro.c0}:{macro.c0 + shape[1]}]"
        raise OperandError(
            f"macro window {_shape(macro.shape)} does not match the {_shape(shape)} data; "
            f"use {want}",
            i,
        )
    return macro


def _macro_at(ops: tuple[Operand, ...], i: int) -> MacroRef:
    op = ops[i]
    assert isinstance(op, MacroRef)
    return op


def _rule_mload(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    src = _view(ops, 1)
    return (_sized_window(_macro_at(ops, 0), src.shape, 0), src)


def _rule_mload_t(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    src = _view(ops, 1)
    return (_sized_window(_macro_at(ops, 0), (src.cols, src.rows), 0), src)


def _rule_mvm(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    dst, src = _view(ops, 0), _view(ops, 1)
    if dst.rows != src.rows:
        raise OperandError(
            f"destination has {dst.rows} rows but the input has {src.rows}; they must agree", 0
        )
    return (dst, src, _sized_window(_macro_at(ops, 2), (src.cols, dst.cols), 2))


def _rule_binary(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    _same_shape(ops, 1)
    _broadcast(ops, 2)
    return ops


def _rule_shift(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    _rule_binary(ops)
    _imm_in(ops, 2, 0, SHIFT_MAX, "shift")
    return ops


def _rule_div(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    _rule_binary(ops)
    b = ops[2]
    if isinstance(b, Imm) and b.value <= 0:
        raise OperandError(f"divisor must be positive, got {b.value}", 2)
    return ops


def _rule_req(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    _same_shape(ops, 1)
    for i in (2, 3, 4):
        _broadcast(ops, i)
    _imm_in(ops, 3, 0, SHIFT_MAX, "shift")
    lo, hi = dtype_range(_view(ops, 0).dtype)
    _imm_in(ops, 5, lo, hi, "clamp low")
    _imm_in(ops, 6, lo, hi, "clamp high")
    low, high = ops[5], ops[6]
    if isinstance(low, Imm) and isinstance(high, Imm) and low.value > high.value:
        raise OperandError(f"clamp low {low.value} is above clamp high {high.value}", 5)
    return ops


def _rule_lut(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    _same_shape(ops, 1)
    if _view(ops, 2).shape != (1, 256):
        raise OperandError(f"table must be 1x256, not {_shape(_view(ops, 2).shape)}", 2)
    _same_dtype(ops, 2)
    return ops


def _rule_reduce(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    dst, src = _view(ops, 0), _view(ops, 1)
    if dst.shape != (src.rows, 1):
        raise OperandError(f"destination must be {src.rows}x1, not {_shape(dst.shape)}", 0)
    return ops


def _rule_sel(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    for i in (1, 2, 3):
        _broadcast(ops, i)
    return ops


def _rule_fill(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    dtype = _view(ops, 0).dtype
    lo, hi = dtype_range(dtype)
    value = ops[1]
    if isinstance(value, Imm) and not lo <= value.value <= hi:
        raise OperandError(f"{value.value} does not fit {dtype} [{lo}, {hi}]", 1)
    return ops


def _rule_gather(ops: tuple[Operand, ...]) -> tuple[Operand, ...]:
    dst, table, idx = _view(ops, 0), _view(ops, 1), _view(ops, 2)
    if dst.cols != table.cols:
        raise OperandError(f"destination has {dst.cols} columns, the table {table.cols}", 0)
    if idx.shape != (dst.rows, 1):
        raise OperandError(f"index must be {dst.rows}x1, not {_shape(idx.shape)}", 2)
    _same_dtype(ops, 1)
    return ops


# --- the table -----------------------------------------------------------------------------

_I8: tuple[DType, ...] = ("i8",)
_I32: tuple[DType, ...] = ("i32",)
_CORE = OperandSpec("core", Kind.CORE, Access.NONE)
_TAG = OperandSpec("tag", Kind.TAG, Access.NONE)


def _binary(mnemonic: str, summary: str, rule: Rule = _rule_binary, b: str = "b") -> OpSpec:
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
        _rule_copy,
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
        _rule_gather,
        "dst row i = table row index[i, 0] (embedding lookup)",
    ),
    OpSpec("send", Unit.NOC, (_CORE, _src("src"), _TAG), _rule_sendrecv, "send a view to a core"),
    OpSpec(
        "recv",
        Unit.NOC,
        (_CORE, _dst(), _TAG),
        _rule_sendrecv,
        "receive a view from a core (blocks until the matching send)",
    ),
    OpSpec("barrier", Unit.SYNC, (), _rule_none, "wait until every core reaches this barrier"),
    OpSpec("halt", Unit.SYNC, (), _rule_none, "end of the core's stream"),
    # macro
    OpSpec(
        "mload",
        Unit.MACRO,
        (
            OperandSpec("macro", Kind.MACRO, Access.WRITE),
            OperandSpec("src", Kind.VIEW, Access.READ, ("sp", "gb"), _I8),
        ),
        _rule_mload,
        "write an int8 view into a macro window",
    ),
    OpSpec(
        "mload.t",
        Unit.MACRO,
        (
            OperandSpec("macro", Kind.MACRO, Access.WRITE),
            OperandSpec("src", Kind.VIEW, Access.READ, ("sp", "gb"), _I8),
        ),
        _rule_mload_t,
        "write the transpose of an int8 view into a macro window",
    ),
    OpSpec(
        "mvm",
        Unit.MACRO,
        (_dst(dtypes=_I32), _src("src", _I8), OperandSpec("macro", Kind.MACRO, Access.READ)),
        _rule_mvm,
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
        _rule_mvm,
        "dst += src @ window",
    ),
    # vector unit
    _binary("add", "dst = a + b"),
    _binary("sub", "dst = a - b"),
    _binary("mul", "dst = a * b"),
    _binary("max", "dst = max(a, b)"),
    _binary("min", "dst = min(a, b)"),
    _binary("shl", "dst = a << s", _rule_shift, "s"),
    _binary("rshr", "dst = (a + 2^(s-1)) >> s", _rule_shift, "s"),
    _binary("div", "dst = floor(a / b), b > 0", _rule_div),
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
        _rule_req,
        "dst = clamp(rshr(a * m, s) + zp, lo, hi)",
    ),
    _unary("isqrt", "dst = floor(sqrt(a)), a >= 0", _rule_convert),
    OpSpec(
        "lut",
        Unit.VECTOR,
        (_dst(), _src("a", _I8), _src("table")),
        _rule_lut,
        "dst = table[0, a + 128]",
    ),
    _unary("rsum", "dst[r, 0] = sum of row r (int64)", _rule_reduce),
    _unary("rmax", "dst[r, 0] = max of row r", _rule_reduce),
    OpSpec(
        "sel",
        Unit.VECTOR,
        (_dst(), _src_or_imm("cond"), _src_or_imm("a"), _src_or_imm("b")),
        _rule_sel,
        "dst = cond != 0 ? a : b",
    ),
    _unary("mov", "dst = src (dtype conversion, range-checked)", _rule_convert, "src"),
    _unary("transpose", "dst = src^T", _rule_transpose, "src"),
    OpSpec("fill", Unit.VECTOR, (_dst(), _imm("value")), _rule_fill, "dst = value"),
)

OPCODES: dict[str, OpSpec] = {spec.mnemonic: spec for spec in _SPECS}


_KIND_TYPES: dict[Kind, tuple[type, ...]] = {
    Kind.VIEW: (View,),
    Kind.MACRO: (MacroRef,),
    Kind.VIEW_OR_IMM: (View, Imm),
    Kind.IMM: (Imm,),
    Kind.CORE: (Imm,),
    Kind.TAG: (Imm,),
}
_KIND_TEXT = {
    Kind.VIEW: "a view SPACE[ADDR]:DTYPE[RxC]",
    Kind.MACRO: "a macro mN or mN[r0:r1,c0:c1]",
    Kind.VIEW_OR_IMM: "a view or an integer",
}
_OPERAND_TEXT = {View: "a view", MacroRef: "a macro", Imm: "an integer"}


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
