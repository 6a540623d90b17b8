"""The op base class, the op registry and the helpers the type rules share.

An op is a frozen dataclass whose fields are its typed attributes. The class carries its
arity, which operands must be constants, a `normalize` step (negative axes -> positive...)
and an `infer` type rule. A type rule that fails raises `OpTypeError`; the graph turns it
into a located `CimcError`.

Attribute kinds: bool, int, float, str, tuple[int, ...], DType, TensorType, np.ndarray and
structs: frozen dataclasses whose fields are attribute kinds themselves (a dialect's
compile-time constants, e.g. the quantizer's plans). The printer and parser handle every
kind from these declarations alone. An array field declared
`Annotated[np.ndarray, ArrayOf(dtypes, ranks)]` is checked whenever an op holding it is
built, so an array of the wrong type read from IR text is a located error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import typing
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from cimc.errors import CimcError
from cimc.ir.types import DType, TensorType


class OpTypeError(Exception):
    """The operands of an op do not satisfy its type rule (message without location)."""


@dataclass(frozen=True)
class Op:
    """Base of every op. Subclasses set NAME and the arity and implement `infer`."""

    NAME: ClassVar[str] = ""
    MIN_INPUTS: ClassVar[int] = 0
    MAX_INPUTS: ClassVar[int | None] = 0  # None = variadic
    CONSTANT_OPERANDS: ClassVar[tuple[int, ...]] = ()  # operand positions that must be constants

    def __post_init__(self) -> None:
        for name, kind in attribute_schema(type(self)).items():
            object.__setattr__(
                self, name, coerce_attribute(self.NAME, name, kind, getattr(self, name))
            )
        check_arrays(self.NAME, self)

    def normalize(self, inputs: tuple[TensorType, ...]) -> Op:
        """The canonical spelling of this op for these operand types (default: itself)."""
        return self

    def infer(self, inputs: tuple[TensorType, ...]) -> TensorType:
        """The result type, or OpTypeError naming what is wrong with the operands."""
        raise NotImplementedError(f"op {self.NAME} has no type rule")

    def attributes(self) -> dict[str, Any]:
        """Attribute values by name, sorted by name (the printed order)."""
        names = sorted(attribute_schema(type(self)))
        return {n: getattr(self, n) for n in names if not is_quiet_default(self, n)}

    def key(self) -> Hashable:
        """A hashable identity of the op and its attributes (used by CSE)."""
        return (self.NAME, tuple((k, attribute_key(v)) for k, v in self.attributes().items()))

    def check_arity(self, count: int) -> None:
        lo, hi = self.MIN_INPUTS, self.MAX_INPUTS
        if count < lo or (hi is not None and count > hi):
            if hi is None:
                wanted = f"at least {lo}"
            elif lo == hi:
                wanted = f"{lo}"
            else:
                wanted = f"{lo} to {hi}"
            raise OpTypeError(f"{self.NAME} takes {wanted} operand(s), got {count}")


OPS: dict[str, type[Op]] = {}
"""Every registered op class by its IR name (``layer_norm`` -> LayerNorm)."""

OpClass = TypeVar("OpClass", bound=type[Op])


def register_op(cls: OpClass) -> OpClass:
    """Class decorator: make the op known to the parser, printer, verifier and reference."""
    if not cls.NAME or cls.NAME in OPS:
        raise ValueError(f"op class {cls.__name__} has an empty or duplicate NAME '{cls.NAME}'")
    OPS[cls.NAME] = cls
    return cls


def op_class(name: str) -> type[Op]:
    """The op class called `name` in IR text; CimcError if there is none."""
    try:
        return OPS[name]
    except KeyError:
        raise CimcError(f"unknown op '{name}'") from None


_SCHEMAS: dict[type, dict[str, Any]] = {}
QUIET = "quiet"  # field metadata: printed only when it differs from its default


def quiet(default: Any = None, factory: Callable[[], Any] | None = None) -> Any:
    """A field that prints (and reads back) only when it differs from `default` (or what
    `factory` makes, for arrays): an option added later leaves the text of every op that
    does not use it as it was."""
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={QUIET: True})
    return dataclasses.field(default=default, metadata={QUIET: True})


def is_quiet_default(obj: Any, name: str) -> bool:
    """Does field `name` of the dataclass `obj` hold its quiet default?"""
    f = next(f for f in dataclasses.fields(obj) if f.name == name)
    if not f.metadata.get(QUIET):
        return False
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    value = getattr(obj, name)
    if isinstance(default, np.ndarray) or isinstance(value, np.ndarray):
        return (
            isinstance(value, np.ndarray)
            and isinstance(default, np.ndarray)
            and value.dtype == default.dtype
            and np.array_equal(value, default)
        )
    return bool(value == default)


def quiet_fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.metadata.get(QUIET)}


def attribute_schema(cls: type) -> dict[str, Any]:
    """Field name -> annotated Python type, in declaration order, for the fields of an op
    class or a struct attribute."""
    if cls not in _SCHEMAS:
        hints = typing.get_type_hints(cls)
        _SCHEMAS[cls] = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    return _SCHEMAS[cls]


@dataclass(frozen=True)
class ArrayOf:
    """What `Annotated[np.ndarray, ArrayOf(...)]` allows: these dtypes, these ranks (any
    rank when None)."""

    dtypes: tuple[DType, ...]
    ranks: tuple[int, ...] | None = None

    def check(self, where: str, value: np.ndarray) -> None:
        dtype_ok = any(value.dtype == d.numpy for d in self.dtypes)
        if not dtype_ok or (self.ranks is not None and value.ndim not in self.ranks):
            dtypes = "/".join(d.value for d in self.dtypes)
            ranks = "" if self.ranks is None else f" of rank {'/'.join(map(str, self.ranks))}"
            got = f"{value.dtype}{list(value.shape)}"
            raise CimcError(f"{where} must be {dtypes}{ranks}, got {got}")


_ARRAY_SPECS: dict[type, dict[str, ArrayOf]] = {}


def array_specs(cls: type) -> dict[str, ArrayOf]:
    """The ArrayOf declared on the fields of an op class or struct, by field name."""
    if cls not in _ARRAY_SPECS:
        hints = typing.get_type_hints(cls, include_extras=True)
        _ARRAY_SPECS[cls] = {
            name: meta
            for name, hint in hints.items()
            if typing.get_origin(hint) is typing.Annotated
            for meta in hint.__metadata__
            if isinstance(meta, ArrayOf)
        }
    return _ARRAY_SPECS[cls]


def check_arrays(owner: str, value: Any) -> None:
    """CimcError when an array of `value` (an op or struct, nested structs too) breaks its
    field's ArrayOf."""
    for name, spec in array_specs(type(value)).items():
        spec.check(f"{owner}: {type(value).__name__}.{name}", getattr(value, name))
    for name, kind in attribute_schema(type(value)).items():
        if is_struct(kind):
            check_arrays(owner, getattr(value, name))


def is_struct(kind: Any) -> bool:
    """A struct attribute kind: a dataclass (not an op) whose fields are attributes."""
    return isinstance(kind, type) and dataclasses.is_dataclass(kind) and not issubclass(kind, Op)


def attribute_key(value: Any) -> Hashable:
    """A hashable stand-in for an attribute value: arrays by dtype, shape and content
    digest, structs field by field (so two ops are equal iff every bit of them is)."""
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        digest = hashlib.sha256(data.reshape(-1).view(np.uint8).data).hexdigest()  # in place
        return (data.dtype.str, data.shape, digest)
    if is_struct(type(value)):
        fields = attribute_schema(type(value))
        return (type(value).__name__, tuple(attribute_key(getattr(value, f)) for f in fields))
    if isinstance(value, tuple):
        return tuple(attribute_key(v) for v in value)
    return value


def coerce_attribute(op: str, name: str, kind: Any, value: Any) -> Any:
    """Convert importer-friendly values (numpy scalars, lists) to the declared type."""
    where = f"{op}: attribute {name}"
    if kind is bool:
        if isinstance(value, bool | np.bool_):
            return bool(value)
    elif kind is int:
        if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
            return int(value)
    elif kind is float:
        if isinstance(value, int | float | np.integer | np.floating) and not isinstance(
            value, bool
        ):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif kind == tuple[int, ...]:
        if isinstance(value, tuple | list | np.ndarray):
            items = list(value)
            if all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in items):
                return tuple(int(v) for v in items)
    elif kind in (DType, TensorType, np.ndarray) or is_struct(kind):
        if isinstance(value, kind):
            return value
    else:
        raise TypeError(f"{where}: unsupported attribute type {kind}")
    bulky = isinstance(value, np.ndarray) or is_struct(type(value))  # a repr of any size
    got = f"a {type(value).__name__}" if bulky else repr(value)
    raise CimcError(f"{where} must be {type_name(kind)}, got {got}")


def type_name(kind: Any) -> str:
    if kind == tuple[int, ...]:
        return "a list of ints"
    if kind is DType:
        return f"a dtype ({', '.join(d.value for d in DType)})"
    if kind is np.ndarray:
        return "an array (dense<...>, splat<...> or @name, then : type)"
    if is_struct(kind):
        return f"{kind.__name__}<...>"
    return getattr(kind, "__name__", str(kind))


# ---- helpers shared by the type rules -------------------------------------------------


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise OpTypeError(message)


def broadcast(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """numpy broadcasting of shapes, or OpTypeError naming them."""
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*shapes))
    except ValueError:
        listed = ", ".join(str(list(s)) for s in shapes)
        raise OpTypeError(f"shapes {listed} do not broadcast") from None


def broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    try:
        return tuple(np.broadcast_shapes(shape, target)) == tuple(target)
    except ValueError:
        return False


def same_dtype(inputs: tuple[TensorType, ...], what: str = "operands") -> DType:
    dtypes = sorted({t.dtype.value for t in inputs})
    expect(len(dtypes) == 1, f"{what} must have one dtype, got {', '.join(dtypes)}")
    return inputs[0].dtype


def expect_dtype(t: TensorType, allowed: tuple[DType, ...], what: str) -> None:
    if t.dtype not in allowed:
        names = "/".join(d.value for d in allowed)
        raise OpTypeError(f"{what} must be {names}, got {t}")


def expect_float(t: TensorType, what: str) -> None:
    expect_dtype(t, (DType.F32,), what)


NUMERIC = (DType.F32, DType.I64, DType.I32, DType.I16, DType.I8)
INTEGER = (DType.I64, DType.I32, DType.I16, DType.I8)


def normalize_axis(axis: int, rank: int, what: str = "axis", of: str = "rank") -> int:
    """Python-style negative axis (or index) -> [0, rank); OpTypeError when out of range."""
    if not -rank <= axis < rank:
        raise OpTypeError(f"{what} {axis} out of range for {of} {rank}")
    return axis % rank


def expect_normalized_axis(axis: int, rank: int, what: str = "axis") -> None:
    expect(0 <= axis < rank, f"{what} {axis} must be in [0, {rank})")
