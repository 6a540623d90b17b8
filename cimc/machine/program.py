"""Typed, immutable data model of a CIM program (what the parser builds and the printer prints).

Positions (`line`, `col`, `operand_cols`) and `source_name` do not take part in equality, so a
program built in Python equals the same program parsed back from its printed text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

Space = Literal["sp", "gb", "dram", "flash"]
SPACES: tuple[Space, ...] = ("sp", "gb", "dram", "flash")
SHARED_SPACES: tuple[Space, ...] = ("gb", "dram", "flash")

DType = Literal["i8", "i16", "i32", "i64"]
DTYPES: tuple[DType, ...] = ("i8", "i16", "i32", "i64")
DTYPE_BYTES: dict[str, int] = {"i8": 1, "i16": 2, "i32": 4, "i64": 8}

DeclKind = Literal["const", "input", "output", "region", "state"]
DECL_KINDS: tuple[DeclKind, ...] = ("const", "input", "output", "region", "state")


def dtype_range(dtype: str) -> tuple[int, int]:
    """Inclusive [lo, hi] of a two's-complement integer dtype."""
    bits = 8 * DTYPE_BYTES[dtype]
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


@dataclass(frozen=True)
class View:
    """A 2-D tensor view `SPACE[ADDR]:DTYPE[ROWSxCOLS/STRIDE]` (stride in elements, >= cols).

    `addr` is the resolved byte address; `symbol`/`offset` remember a symbolic address
    (`dram[x+0x40]`: symbol "x", offset 0x40) so the printer reproduces it.
    """

    space: Space
    addr: int
    dtype: DType
    rows: int
    cols: int
    stride: int = 0  # 0 means contiguous rows: normalized to `cols`
    symbol: str | None = None
    offset: int = 0

    def __post_init__(self) -> None:
        if self.stride == 0:
            object.__setattr__(self, "stride", self.cols)

    @property
    def elem_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.cols)

    @property
    def elements(self) -> int:
        return self.rows * self.cols

    @property
    def nbytes(self) -> int:
        """Bytes of data in the view (not counting the gaps of a strided view)."""
        return self.rows * self.cols * self.elem_bytes

    @property
    def end(self) -> int:
        """One past the last byte the view touches."""
        return self.addr + ((self.rows - 1) * self.stride + self.cols) * self.elem_bytes

    def row_ranges(self) -> tuple[tuple[int, int], ...]:
        """Half-open byte ranges [start, end) of each row (one range when contiguous)."""
        row_bytes = self.cols * self.elem_bytes
        if self.stride == self.cols:
            return ((self.addr, self.addr + self.rows * row_bytes),)
        step = self.stride * self.elem_bytes
        return tuple(
            (self.addr + r * step, self.addr + r * step + row_bytes) for r in range(self.rows)
        )


@dataclass(frozen=True)
class MacroRef:
    """Macro operand: `mN` (whole=True: window at origin 0,0 whose extent the other operands
    imply; the parser fills r1/c1) or an explicit window `mN[r0:r1,c0:c1]` (half-open)."""

    index: int
    r0: int
    r1: int
    c0: int
    c1: int
    whole: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        return (self.r1 - self.r0, self.c1 - self.c0)


@dataclass(frozen=True)
class Imm:
    """A signed integer operand (immediate, core id or tag; the opcode table says which)."""

    value: int


@dataclass(frozen=True)
class CoreSet:
    """The destination cores of an `mcast`, `{0,2-5}` in the text: ascending, no repeats."""

    cores: tuple[int, ...]


Operand = View | MacroRef | Imm | CoreSet

SENDS = ("send", "mcast")  # the instructions that put a message on the NoC


@dataclass(frozen=True)
class Comment:
    """A full-line comment, kept in order so the printer reproduces it."""

    text: str


@dataclass(frozen=True)
class Instr:
    """One instruction. `comment` is the trailing comment: the graph node it came from."""

    opcode: str
    operands: tuple[Operand, ...]
    comment: str | None = None
    line: int = field(default=0, compare=False)
    col: int = field(default=0, compare=False)
    operand_cols: tuple[int, ...] = field(default=(), compare=False)

    def operand_col(self, index: int) -> int:
        """Column of operand `index` (falls back to the instruction's column)."""
        return self.operand_cols[index] if index < len(self.operand_cols) else self.col


def destinations(instr: Instr) -> tuple[int, ...]:
    """The cores a send or mcast delivers to, in order (empty for other instructions)."""
    if instr.opcode not in SENDS:
        return ()
    peers = instr.operands[0]
    if isinstance(peers, CoreSet):
        return peers.cores
    assert isinstance(peers, Imm)
    return (peers.value,)


@dataclass(frozen=True)
class Decl:
    """`.const/.input/.output/.state NAME SPACE[ADDR] DTYPE[RxC]` or `.region NAME SPACE[ADDR]
    NBYTES`.

    Regions have dtype None and rows = cols = 0; `nbytes` is always the byte size.
    """

    kind: DeclKind
    name: str
    space: Space
    addr: int
    dtype: DType | None
    rows: int
    cols: int
    nbytes: int
    comment: str | None = None
    line: int = field(default=0, compare=False)
    col: int = field(default=0, compare=False)

    @property
    def end(self) -> int:
        return self.addr + self.nbytes

    @property
    def shape(self) -> tuple[int, int] | None:
        return None if self.dtype is None else (self.rows, self.cols)


@dataclass(frozen=True)
class Persist:
    """`.persist CORE mN`: the macro keeps its cells from one run to the next (the runner
    passes them in and hands them back), e.g. decode weights that stay between tokens."""

    core: int
    macro: int
    comment: str | None = None
    line: int = field(default=0, compare=False)
    col: int = field(default=0, compare=False)


CoreItem = Instr | Comment
HeaderItem = Decl | Comment | Persist


@dataclass(frozen=True)
class CoreStream:
    """The straight-line instruction stream of one core (`.core N` section)."""

    core: int
    items: tuple[CoreItem, ...]
    line: int = field(default=0, compare=False)

    @cached_property
    def instrs(self) -> tuple[Instr, ...]:
        """The instructions without comments (cached: the stream is immutable)."""
        return tuple(item for item in self.items if isinstance(item, Instr))


@dataclass(frozen=True)
class Program:
    """A whole program: `.arch`, optional `.consts` (with the file's hash), header (decls +
    comments), core streams.

    `header` keeps declarations and full-line comments in source order; `decls` filters it.
    """

    arch_name: str
    consts_file: str | None
    header: tuple[HeaderItem, ...]
    cores: tuple[CoreStream, ...]
    source_name: str = field(default="<program>", compare=False)
    consts_line: int = field(default=0, compare=False)
    # sha256 (hex) of the constants file's bytes: a program refuses any other file, such as
    # the constants of another compile written to the same name (`.consts PATH sha256:HEX`)
    consts_sha256: str | None = None

    @cached_property
    def decls(self) -> tuple[Decl, ...]:
        return tuple(item for item in self.header if isinstance(item, Decl))

    @cached_property
    def _decl_by_name(self) -> dict[str, Decl]:
        return {d.name: d for d in reversed(self.decls)}  # the first of duplicates wins

    def decl(self, name: str) -> Decl | None:
        return self._decl_by_name.get(name)

    @cached_property
    def persists(self) -> tuple[Persist, ...]:
        return tuple(item for item in self.header if isinstance(item, Persist))

    def decls_of(self, kind: DeclKind) -> tuple[Decl, ...]:
        return tuple(d for d in self.decls if d.kind == kind)

    @cached_property
    def _core_by_id(self) -> dict[int, CoreStream]:
        return {s.core: s for s in reversed(self.cores)}

    def core(self, core_id: int) -> CoreStream | None:
        return self._core_by_id.get(core_id)

    def instrs(self, core_id: int) -> tuple[Instr, ...]:
        stream = self.core(core_id)
        return () if stream is None else stream.instrs

    @cached_property
    def extents(self) -> dict[str, int]:
        """Per space, one past the last byte any declaration or view operand touches (sp: on
        any core). Cached: a program run many times (decode steps) computes it once."""
        ends: dict[str, int] = {}
        for d in self.decls:
            ends[d.space] = max(ends.get(d.space, 0), d.end)
        for stream in self.cores:
            for instr in stream.instrs:
                for op in instr.operands:  # every view operand (cheaper than the opcode table)
                    if isinstance(op, View) and op.end > ends.get(op.space, 0):
                        ends[op.space] = op.end
        return ends

    def loc(self, instr: Instr | Decl, col: int | None = None) -> str:
        """`FILE:LINE:COL` of an instruction or declaration (for CimcError locations)."""
        return f"{self.source_name}:{instr.line}:{instr.col if col is None else col}"
