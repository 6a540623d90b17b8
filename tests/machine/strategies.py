"""Hypothesis strategies: random programs that are valid for the `tiny` arch.

`programs()` draws whole programs that pass `validate(program, load_arch("tiny"))`: two cores,
every opcode of the table (BUILDERS covers them all, a test checks it), views in range and
aligned, macro windows written before they are read, sends and recvs paired inside the same
barrier epoch (no deadlock), shared memory touched by core 0 only (no race). Values are not
constrained, so running them may raise run-time errors (overflow, negative isqrt): the fuzzer
treats those as expected CimcErrors, never as crashes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from hypothesis import strategies as st

from cimc.machine.program import (
    DTYPE_BYTES,
    DTYPES,
    Comment,
    CoreItem,
    CoreStream,
    Decl,
    Imm,
    Instr,
    MacroRef,
    Program,
    View,
    dtype_range,
)

# Sizes of isa/arch/tiny.toml (test_strategies checks they still match the preset).
TINY = {"sp": 16384, "gb": 65536, "dram": 4194304, "flash": 4194304}
TINY_MACROS, TINY_ROWS, TINY_COLS = 4, 32, 32

DECLS = (
    Decl("const", "w", "flash", 0x0, "i8", 32, 32, 1024),
    Decl("const", "lut.t", "flash", 0x400, "i16", 1, 256, 512),
    Decl("input", "x", "dram", 0x1000, "i8", 8, 32, 256),
    Decl("output", "y", "dram", 0x2000, "i32", 8, 8, 256),
    Decl("region", "buf", "gb", 0x0, None, 0, 0, 4096),
)

_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters=";"), max_size=20
).map(str.strip)
_comment = st.one_of(st.none(), _text.filter(bool))
Draw = st.DrawFn


@dataclass
class Ctx:
    """What a builder may use: the core it is on (shared memory only on core 0)."""

    core: int


def _dim(draw: Draw, hi: int = 8) -> int:
    return int(draw(st.integers(1, hi)))


def sp_view(draw: Draw, dtype: str, rows: int, cols: int) -> View:
    elem = DTYPE_BYTES[dtype]
    stride = cols + int(draw(st.sampled_from([0, 0, 0, 3])))
    span = ((rows - 1) * stride + cols) * elem
    slot = int(draw(st.integers(0, (TINY["sp"] - span) // elem)))
    return View("sp", slot * elem, dtype, rows, cols, stride)


def _dtype(draw: Draw) -> str:
    return str(draw(st.sampled_from(DTYPES)))


def shared_view(draw: Draw, rows: int, cols: int, write: bool) -> View:
    """A view inside a declared symbol (core 0 only), symbolic or numeric."""
    choices = [d for d in DECLS if not write or d.kind in ("region", "output")]
    decl = draw(st.sampled_from(choices))
    assert isinstance(decl, Decl)
    dtype = decl.dtype or "i8"
    elem = DTYPE_BYTES[dtype]
    rows, cols = min(rows, decl.rows or 8), min(cols, decl.cols or 32)
    room = decl.nbytes - rows * cols * elem
    offset = int(draw(st.integers(0, room // elem))) * elem
    symbolic = bool(draw(st.booleans()))
    return View(
        decl.space,
        decl.addr + offset,
        dtype,
        rows,
        cols,
        cols,
        decl.name if symbolic else None,
        offset if symbolic else 0,
    )


def _operand_or_imm(draw: Draw, dtype: str, rows: int, cols: int) -> View | Imm:
    if draw(st.booleans()):
        return Imm(int(draw(st.integers(-1000, 1000))))
    shape = draw(st.sampled_from([(rows, cols), (1, cols), (rows, 1), (1, 1)]))
    return sp_view(draw, dtype, *shape)


def _binary(draw: Draw, ctx: Ctx, op: str) -> list[Instr]:
    r, c = _dim(draw), _dim(draw)
    dst, a = sp_view(draw, _dtype(draw), r, c), sp_view(draw, _dtype(draw), r, c)
    b = _operand_or_imm(draw, _dtype(draw), r, c)
    if op in ("shl", "rshr") and isinstance(b, Imm):
        b = Imm(abs(b.value) % 64)
    if op == "div" and isinstance(b, Imm):
        b = Imm(abs(b.value) + 1)
    return [Instr(op, (dst, a, b))]


def _unary(draw: Draw, ctx: Ctx, op: str) -> list[Instr]:
    r, c = _dim(draw), _dim(draw)
    if op in ("rsum", "rmax"):
        return [Instr(op, (sp_view(draw, _dtype(draw), r, 1), sp_view(draw, _dtype(draw), r, c)))]
    if op == "transpose":
        dt = _dtype(draw)
        return [Instr(op, (sp_view(draw, dt, c, r), sp_view(draw, dt, r, c)))]
    return [Instr(op, (sp_view(draw, _dtype(draw), r, c), sp_view(draw, _dtype(draw), r, c)))]


def _req(draw: Draw, ctx: Ctx, op: str) -> list[Instr]:
    r, c = _dim(draw), _dim(draw)
    dt = _dtype(draw)
    lo_min, hi_max = dtype_range(dt)
    lo = int(draw(st.integers(lo_min, hi_max)))
    hi = int(draw(st.integers(lo, hi_max)))
    s = draw(st.one_of(st.integers(0, 63).map(Imm), st.just(sp_view(draw, "i8", 1, c))))
    ops = (
        sp_view(draw, dt, r, c),
        sp_view(draw, "i32", r, c),
        _operand_or_imm(draw, "i32", r, c),
        s,
        _operand_or_imm(draw, "i8", r, c),
        Imm(lo),
        Imm(hi),
    )
    return [Instr(op, ops)]


def _lut(draw: Draw, ctx: Ctx, op: str) -> list[Instr]:
    r, c = _dim(draw), _dim(draw)
    dt = _dtype(draw)
    ops = (sp_view(draw, dt, r, c), sp_view(draw, "i8", r, c), sp_view(draw, dt, 1, 256))
    return [Instr(op, ops)]


def _sel(draw: Draw, ctx: Ctx, op: str) -> list[Instr]:
    r, c = _dim(draw), _dim(draw)
    dst = sp_view(draw, _dtype(draw), r, c)
    rest = tuple(_operand_or_imm(draw, _dtype(draw), r, c) for _ in range(3))
    return [Instr(op, (dst, *rest))]


def _fill(draw: Draw, ctx: Ctx, op: str) -> list[Instr]:
    dt = _dtype(draw)
    value = int(draw(st.integers(*dtype_range(dt))))
    return [Instr(op, (sp_view(draw, dt, _dim(draw), _dim(draw)), Imm(value)))]


def _window(draw: Draw, rows: int, cols: int, whole: bool) -> MacroRef:
    index = int(draw(st.integers(0, TINY_MACROS - 1)))
    if whole:
        return MacroRef(index, 0, rows, 0, cols, whole=True)
    r0 = int(draw(st.integers(0, TINY_ROWS - rows)))
    c0 = int(draw(st.integers(0, TINY_COLS - cols)))
    return MacroRef(index, r0, r0 + rows, c0, c0 + cols)


def _macro(draw: Draw, ctx: Ctx, op: str) -> list[Instr]:
    """An mload (plain or transposed) of a window, then maybe an mvm over it."""
    k, n = _dim(draw, TINY_ROWS), _dim(draw, TINY_COLS)
    window = _window(draw, k, n, bool(draw(st.booleans())))
    transposed = op == "mload.t" or (op.startswith("mvm") and draw(st.booleans()))
    src_shape = (n, k) if transposed else (k, n)
    space_gb = ctx.core == 0 and bool(draw(st.booleans()))
    src: View
    if space_gb:
        src = View("gb", 0x40, "i8", *src_shape, src_shape[1], "buf", 0x40)
    else:
        src = sp_view(draw, "i8", *src_shape)
    load = Instr("mload.t" if transposed else "mload", (window, src))
    if not op.startswith("mvm"):
        return [load]
    rows = _dim(draw)
    mvm = Instr(op, (sp_view(draw, "i32", rows, n), sp_view(draw, "i8", rows, k), window))
    return [load, mvm]


def _dma(draw: Draw, ctx: Ctx, op: str) -> list[Instr]:
    r, c = _dim(draw), _dim(draw)
    if ctx.core != 0:
        dt = _dtype(draw)
        return [Instr(op, (sp_view(draw, dt, r, c), sp_view(draw, dt, r, c)))]
    if draw(st.booleans()):
        src = shared_view(draw, r, c, False)
        return [Instr(op, (sp_view(draw, src.dtype, src.rows, src.cols), src))]
    dst = shared_view(draw, r, c, True)
    return [Instr(op, (dst, sp_view(draw, dst.dtype, dst.rows, dst.cols)))]


def _gather(draw: Draw, ctx: Ctx, op: str) -> list[Instr]:
    n, d = _dim(draw), _dim(draw)
    dt = _dtype(draw)
    table = sp_view(draw, dt, _dim(draw), d)
    if ctx.core == 0 and draw(st.booleans()):
        table = View("flash", 0x0, "i8", 32, d, 32, "w", 0)
        dt = "i8"
    index = sp_view(draw, _dtype(draw), n, 1)
    return [Instr(op, (sp_view(draw, dt, n, d), table, index))]


Builder = Callable[[Draw, Ctx, str], list[Instr]]
BUILDERS: dict[str, Builder] = {
    **{op: _binary for op in ("add", "sub", "mul", "max", "min", "shl", "rshr", "div")},
    **{op: _unary for op in ("isqrt", "rsum", "rmax", "mov", "transpose")},
    "req": _req,
    "lut": _lut,
    "sel": _sel,
    "fill": _fill,
    **{op: _macro for op in ("mload", "mload.t", "mvm", "mvm.acc")},
    "dma": _dma,
    "gather": _gather,
}
# Built structurally by `programs()` rather than by a per-opcode builder.
STRUCTURAL = ("send", "recv", "barrier", "halt")


@st.composite
def instrs(draw: Draw, core: int, opcode: str | None = None) -> list[Instr]:
    op = opcode or str(draw(st.sampled_from(sorted(BUILDERS))))
    out = BUILDERS[op](draw, Ctx(core), op)
    return [Instr(i.opcode, i.operands, draw(_comment)) for i in out]


@st.composite
def _epoch(draw: Draw, tag_base: int) -> tuple[list[CoreItem], list[CoreItem]]:
    """One barrier epoch: random work on both cores plus messages from core 0 to core 1."""
    items: list[list[CoreItem]] = [[], []]
    for core in (0, 1):
        for _ in range(int(draw(st.integers(0, 4)))):
            items[core].extend(draw(instrs(core)))
            if draw(st.integers(0, 5)) == 0:
                items[core].append(Comment(str(draw(_text))))
    for k in range(int(draw(st.integers(0, 2)))):
        r, c, dt = _dim(draw), _dim(draw), _dtype(draw)
        tag = tag_base + k % 2
        items[0].append(Instr("send", (Imm(1), sp_view(draw, dt, r, c), Imm(tag))))
        items[1].append(Instr("recv", (Imm(0), sp_view(draw, dt, r, c), Imm(tag))))
    return items[0], items[1]


@st.composite
def programs(draw: Draw) -> Program:
    cores: list[list[CoreItem]] = [[], []]
    epochs = int(draw(st.integers(1, 3)))
    for e in range(epochs):
        a, b = draw(_epoch(2 * e))
        cores[0].extend(a)
        cores[1].extend(b)
        if e < epochs - 1:
            for items in cores:
                items.append(Instr("barrier", ()))
    header: list[Decl | Comment] = [replace(d, comment=draw(_comment)) for d in DECLS]
    if draw(st.booleans()):
        header.insert(int(draw(st.integers(0, len(header)))), Comment(str(draw(_text))))
    streams = tuple(CoreStream(c, (*items, Instr("halt", ()))) for c, items in enumerate(cores))
    consts = draw(st.sampled_from([None, "tiny.safetensors", "weights/w.safetensors"]))
    return Program("tiny", consts, tuple(header), streams, "<generated>")
