"""Hypothesis strategies: random programs that are valid for an arch preset (`tiny` default).

`programs(geometry)` draws whole programs that pass `validate(program, arch)`: up to four of
the arch's cores, every opcode of the table (BUILDERS covers them all, a test checks it),
views in range and aligned, macro windows written before they are read, no deadlock and no
race. Shared memory follows an ownership scheme that makes races impossible by construction:
the first core owns the `buf` region and the output `y`; every other core owns a private gb
region `privN`; inputs and constants are read by all; and data crosses cores through the
`mail` dram region, written by one core and read by another only after a send/recv between
them (handoffs are emitted in one global order, so recvs never wait in a cycle) or after a
barrier. Values are not constrained, so running them may raise run-time errors (overflow,
negative isqrt): the fuzzers treat those as expected CimcErrors, never as crashes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from hypothesis import strategies as st

from cimc.machine.arch import Arch
from cimc.machine.program import (
    DTYPE_BYTES,
    DTYPES,
    Comment,
    CoreItem,
    CoreSet,
    CoreStream,
    Decl,
    Imm,
    Instr,
    MacroRef,
    Program,
    View,
    dtype_range,
)

# Sizes of isa/arch/tiny.toml (test_printer checks they still match the preset).
TINY = {"sp": 16384, "gb": 65536, "dram": 4194304, "flash": 4194304}
TINY_MACROS, TINY_ROWS, TINY_COLS = 4, 32, 32


@dataclass(frozen=True)
class Geometry:
    """What the generator needs to know of an arch: its name, cores, sp and macro sizes."""

    arch: str
    cores: int
    sp: int
    macros: int
    rows: int
    cols: int

    @classmethod
    def of(cls, arch: Arch) -> Geometry:
        return cls(
            arch.name,
            arch.chip.cores,
            arch.core.scratchpad_bytes,
            arch.core.macros,
            arch.macro.rows,
            arch.macro.cols,
        )


TINY_GEOMETRY = Geometry("tiny", 2, TINY["sp"], TINY_MACROS, TINY_ROWS, TINY_COLS)

DECLS = (
    Decl("const", "w", "flash", 0x0, "i8", 32, 32, 1024),
    Decl("const", "lut.t", "flash", 0x400, "i16", 1, 256, 512),
    Decl("input", "x", "dram", 0x1000, "i8", 8, 32, 256),
    Decl("output", "y", "dram", 0x2000, "i32", 8, 8, 256),
    Decl("region", "buf", "gb", 0x0, None, 0, 0, 4096),
)
MAIL = Decl("region", "mail", "dram", 0x4000, None, 0, 0, 0x2000)
MAIL_SLOT = 256  # bytes per handoff slot: 32 slots per barrier epoch


def private_region(core: int) -> Decl:
    """The gb region only `core` touches (cores other than the first of the program)."""
    return Decl("region", f"priv{core}", "gb", 0x1000 + core * 0x800, None, 0, 0, 0x800)


_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters=";"), max_size=20
).map(str.strip)
_comment = st.one_of(st.none(), _text.filter(bool))
Draw = st.DrawFn
_OWNED = ("region", "output")  # what the owning core may write (inputs stay as given)


@dataclass
class Ctx:
    """What a builder may use: the core it is on, the arch's sizes, the shared data it owns
    (writable) and may read. By default the first core owns `buf` and `y`."""

    core: int
    geo: Geometry = TINY_GEOMETRY
    readable: tuple[Decl, ...] = DECLS
    writable: tuple[Decl, ...] = field(default=tuple(d for d in DECLS if d.kind in _OWNED))

    @classmethod
    def for_core(cls, core: int, owner: bool, geo: Geometry = TINY_GEOMETRY) -> Ctx:
        if owner:
            return cls(core, geo, DECLS, tuple(d for d in DECLS if d.kind in _OWNED))
        mine = private_region(core)
        shared = tuple(d for d in DECLS if d.kind in ("const", "input"))
        return cls(core, geo, (*shared, mine), (mine,))


def _dim(draw: Draw, hi: int = 8) -> int:
    return int(draw(st.integers(1, hi)))


def sp_view(draw: Draw, dtype: str, rows: int, cols: int, sp: int = TINY["sp"]) -> View:
    elem = DTYPE_BYTES[dtype]
    stride = cols + int(draw(st.sampled_from([0, 0, 0, 3])))
    span = ((rows - 1) * stride + cols) * elem
    slot = int(draw(st.integers(0, (sp - span) // elem)))
    return View("sp", slot * elem, dtype, rows, cols, stride)


def _sp(draw: Draw, ctx: Ctx, dtype: str, rows: int, cols: int) -> View:
    return sp_view(draw, dtype, rows, cols, ctx.geo.sp)


def _dtype(draw: Draw) -> str:
    return str(draw(st.sampled_from(DTYPES)))


def decl_view(draw: Draw, decl: Decl, rows: int, cols: int, dtype: str | None = None) -> View:
    """A view inside `decl` (its dtype, or `dtype` for a region), symbolic or numeric."""
    dtype = decl.dtype or dtype or "i8"
    elem = DTYPE_BYTES[dtype]
    max_cols = decl.cols or decl.nbytes // elem
    cols = min(cols, max_cols)
    rows = min(rows, decl.rows or decl.nbytes // (cols * elem))
    room = decl.nbytes - rows * cols * elem
    offset = int(draw(st.integers(0, room // elem))) * elem
    symbolic = bool(draw(st.booleans()))
    return View(
        decl.space,
        decl.addr + offset,
        dtype,  # type: ignore[arg-type]
        rows,
        cols,
        cols,
        decl.name if symbolic else None,
        offset if symbolic else 0,
    )


def shared_view(draw: Draw, rows: int, cols: int, write: bool, ctx: Ctx | None = None) -> View:
    """A view inside a declaration the core may read (or write), symbolic or numeric."""
    ctx = ctx or Ctx(0)
    decl = draw(st.sampled_from(ctx.writable if write else ctx.readable))
    assert isinstance(decl, Decl)
    return decl_view(draw, decl, rows, cols, _dtype(draw))


def _operand_or_imm(draw: Draw, ctx: Ctx, dtype: str, rows: int, cols: int) -> View | Imm:
    if draw(st.booleans()):
        return Imm(int(draw(st.integers(-1000, 1000))))
    shape = draw(st.sampled_from([(rows, cols), (1, cols), (rows, 1), (1, 1)]))
    return _sp(draw, ctx, dtype, *shape)


def _binary(draw: Draw, ctx: Ctx, op: str) -> list[Instr]:
    r, c = _dim(draw), _dim(draw)
    dst, a = _sp(draw, ctx, _dtype(draw), r, c), _sp(draw, ctx, _dtype(draw), r, c)
    b = _operand_or_imm(draw, ctx, _dtype(draw), r, c)
    if op in ("shl", "rshr") and isinstance(b, Imm):
        b = Imm(abs(b.value) % 64)
    if op == "div" and isinstance(b, Imm):
        b = Imm(abs(b.value) + 1)
    return [Instr(op, (dst, a, b))]


def _unary(draw: Draw, ctx: Ctx, op: str) -> list[Instr]:
    r, c = _dim(draw), _dim(draw)
    if op in ("rsum", "rmax"):
        return [Instr(op, (_sp(draw, ctx, _dtype(draw), r, 1), _sp(draw, ctx, _dtype(draw), r, c)))]
    if op == "transpose":
        dt = _dtype(draw)
        return [Instr(op, (_sp(draw, ctx, dt, c, r), _sp(draw, ctx, dt, r, c)))]
    return [Instr(op, (_sp(draw, ctx, _dtype(draw), r, c), _sp(draw, ctx, _dtype(draw), r, c)))]


def _req(draw: Draw, ctx: Ctx, op: str) -> list[Instr]:
    r, c = _dim(draw), _dim(draw)
    dt = _dtype(draw)
    lo_min, hi_max = dtype_range(dt)
    lo = int(draw(st.integers(lo_min, hi_max)))
    hi = int(draw(st.integers(lo, hi_max)))
    s = draw(st.one_of(st.integers(0, 63).map(Imm), st.just(_sp(draw, ctx, "i8", 1, c))))
    ops = (
        _sp(draw, ctx, dt, r, c),
        _sp(draw, ctx, "i32", r, c),
        _operand_or_imm(draw, ctx, "i32", r, c),
        s,
        _operand_or_imm(draw, ctx, "i8", r, c),
        Imm(lo),
        Imm(hi),
    )
    return [Instr(op, ops)]


def _lut(draw: Draw, ctx: Ctx, op: str) -> list[Instr]:
    r, c = _dim(draw), _dim(draw)
    dt = _dtype(draw)
    ops = (_sp(draw, ctx, dt, r, c), _sp(draw, ctx, "i8", r, c), _sp(draw, ctx, dt, 1, 256))
    return [Instr(op, ops)]


def _sel(draw: Draw, ctx: Ctx, op: str) -> list[Instr]:
    r, c = _dim(draw), _dim(draw)
    dst = _sp(draw, ctx, _dtype(draw), r, c)
    rest = tuple(_operand_or_imm(draw, ctx, _dtype(draw), r, c) for _ in range(3))
    return [Instr(op, (dst, *rest))]


def _fill(draw: Draw, ctx: Ctx, op: str) -> list[Instr]:
    dt = _dtype(draw)
    value = int(draw(st.integers(*dtype_range(dt))))
    return [Instr(op, (_sp(draw, ctx, dt, _dim(draw), _dim(draw)), Imm(value)))]


def _window(draw: Draw, ctx: Ctx, rows: int, cols: int, whole: bool) -> MacroRef:
    g = ctx.geo
    index = int(draw(st.integers(0, g.macros - 1)))
    if whole:
        return MacroRef(index, 0, rows, 0, cols, whole=True)
    r0 = int(draw(st.integers(0, g.rows - rows)))
    c0 = int(draw(st.integers(0, g.cols - cols)))
    return MacroRef(index, r0, r0 + rows, c0, c0 + cols)


def _macro(draw: Draw, ctx: Ctx, op: str) -> list[Instr]:
    """An mload (plain or transposed) of a window, then maybe an mvm over it."""
    k, n = _dim(draw, ctx.geo.rows), _dim(draw, ctx.geo.cols)
    window = _window(draw, ctx, k, n, bool(draw(st.booleans())))
    transposed = op == "mload.t" or (op.startswith("mvm") and draw(st.booleans()))
    src_shape = (n, k) if transposed else (k, n)
    gb = [d for d in ctx.writable if d.space == "gb" and d.nbytes >= k * n + 0x40]
    src: View
    if gb and draw(st.booleans()):  # a gb region this core owns
        src = View("gb", gb[0].addr + 0x40, "i8", *src_shape, src_shape[1], gb[0].name, 0x40)
    else:
        src = _sp(draw, ctx, "i8", *src_shape)
    load = Instr("mload.t" if transposed else "mload", (window, src))
    if not op.startswith("mvm"):
        return [load]
    rows = _dim(draw)
    outs = n  # an int4 mvm has two outputs per cell (one less: the last high half unused)
    if op.startswith("mvm.i4"):
        outs = 2 * n - int(draw(st.booleans()))
    dst, x = _sp(draw, ctx, "i32", rows, outs), _sp(draw, ctx, "i8", rows, k)
    return [load, Instr(op, (dst, x, window))]


def _mload_masked(draw: Draw, ctx: Ctx, op: str) -> list[Instr]:
    """An mload.m (mload.t.m) of a window (the rows, columns, its index names), then maybe
    an mvm over it."""
    k, n = _dim(draw, ctx.geo.rows), _dim(draw, ctx.geo.cols)
    window = _window(draw, ctx, k, n, bool(draw(st.booleans())))
    if op == "mload.t.m":  # the source is the window's transpose, one index per column
        src, index = _sp(draw, ctx, "i8", n, k), _sp(draw, ctx, _dtype(draw), n, 1)
    else:
        src, index = _sp(draw, ctx, "i8", k, n), _sp(draw, ctx, _dtype(draw), k, 1)
    load = Instr(op, (window, src, index))
    if not draw(st.booleans()):
        return [load]
    rows = _dim(draw)
    dst, x = _sp(draw, ctx, "i32", rows, n), _sp(draw, ctx, "i8", rows, k)
    return [load, Instr("mvm", (dst, x, window))]


def _nonzero_index(draw: Draw, ctx: Ctx, op: str) -> list[Instr]:
    r, c = _dim(draw), _dim(draw)
    dst = _sp(draw, ctx, draw(st.sampled_from(["i16", "i32", "i64"])), c, 1)
    return [Instr(op, (dst, _sp(draw, ctx, _dtype(draw), r, c)))]


def _dma(draw: Draw, ctx: Ctx, op: str) -> list[Instr]:
    r, c = _dim(draw), _dim(draw)
    kind = draw(st.sampled_from(["sp", "load", "store", "shared"]))
    if kind == "sp":
        dt = _dtype(draw)
        return [Instr(op, (_sp(draw, ctx, dt, r, c), _sp(draw, ctx, dt, r, c)))]
    if kind == "load":
        src = shared_view(draw, r, c, False, ctx)
        return [Instr(op, (_sp(draw, ctx, src.dtype, src.rows, src.cols), src))]
    dst = shared_view(draw, r, c, True, ctx)
    if kind == "store":
        return [Instr(op, (dst, _sp(draw, ctx, dst.dtype, dst.rows, dst.cols)))]
    # memory to memory (e.g. flash -> gb, dram -> dram) without the scratchpad
    src = shared_view(draw, dst.rows, dst.cols, False, ctx)
    if (src.dtype, src.shape) != (dst.dtype, dst.shape):
        return [Instr(op, (dst, _sp(draw, ctx, dst.dtype, dst.rows, dst.cols)))]
    return [Instr(op, (dst, src))]


def _gather(draw: Draw, ctx: Ctx, op: str) -> list[Instr]:
    n, d = _dim(draw), _dim(draw)
    dt = _dtype(draw)
    table = _sp(draw, ctx, dt, _dim(draw), d)
    if draw(st.booleans()):
        table = View("flash", 0x0, "i8", 32, d, 32, "w", 0)  # every core may read `w`
        dt = "i8"
    index = _sp(draw, ctx, _dtype(draw), n, 1)
    return [Instr(op, (_sp(draw, ctx, dt, n, d), table, index))]


def _scatter(draw: Draw, ctx: Ctx, op: str) -> list[Instr]:
    n, d = _dim(draw), _dim(draw)
    if draw(st.booleans()):
        table = shared_view(draw, _dim(draw), d, True, ctx)  # e.g. a KV cache in gb/dram
    else:
        table = _sp(draw, ctx, _dtype(draw), _dim(draw), d)
    index = _sp(draw, ctx, _dtype(draw), n, 1)
    return [Instr(op, (table, _sp(draw, ctx, table.dtype, n, table.cols), index))]


def _dma_masked(draw: Draw, ctx: Ctx, op: str) -> list[Instr]:
    """Rows copied in place between two tables of one layout: sp/gb/dram or flash -> any."""
    n = _dim(draw)
    if draw(st.booleans()):
        src = View("flash", 0x0, "i8", 32, _dim(draw), 32, "w", 0)  # every core may read `w`
    else:
        src = shared_view(draw, _dim(draw), _dim(draw), False, ctx)
    if draw(st.booleans()):
        dst = _sp(draw, ctx, src.dtype, src.rows, src.cols)
    else:
        dst = shared_view(draw, src.rows, src.cols, True, ctx)
        if dst.dtype != src.dtype:
            dst = _sp(draw, ctx, src.dtype, src.rows, src.cols)
    return [Instr(op, (dst, src, _sp(draw, ctx, _dtype(draw), n, 1)))]


Builder = Callable[[Draw, Ctx, str], list[Instr]]
BUILDERS: dict[str, Builder] = {
    **{op: _binary for op in ("add", "sub", "mul", "max", "min", "shl", "rshr", "div")},
    **{op: _unary for op in ("isqrt", "rsum", "rmax", "mov", "transpose")},
    "req": _req,
    "lut": _lut,
    "sel": _sel,
    "fill": _fill,
    **{op: _macro for op in ("mload", "mload.t", "mvm", "mvm.acc", "mvm.i4", "mvm.i4.acc")},
    "dma": _dma,
    "gather": _gather,
    "gather.m": _gather,
    "dma.m": _dma_masked,
    "scatter": _scatter,
    "mload.m": _mload_masked,
    "mload.t.m": _mload_masked,
    "nzidx": _nonzero_index,
}
# Built structurally by `programs()` rather than by a per-opcode builder.
STRUCTURAL = ("send", "mcast", "recv", "barrier", "halt")


@st.composite
def instrs(draw: Draw, core: int, opcode: str | None = None, ctx: Ctx | None = None) -> list[Instr]:
    op = opcode or str(draw(st.sampled_from(sorted(BUILDERS))))
    out = BUILDERS[op](draw, ctx or Ctx.for_core(core, owner=core == 0), op)
    return [Instr(i.opcode, i.operands, draw(_comment)) for i in out]


def _work(draw: Draw, ctx: Ctx, items: list[CoreItem], most: int) -> None:
    for _ in range(int(draw(st.integers(0, most)))):
        items.extend(draw(instrs(ctx.core, ctx=ctx)))
        if draw(st.integers(0, 5)) == 0:
            items.append(Comment(str(draw(_text))))


def _handoff(draw: Draw, ctxs: dict[int, Ctx], items: dict[int, list[CoreItem]], k: int) -> None:
    """Core a passes data to one core (send) or several (mcast): a plain message, or through
    the `mail` slot k (written by a, read by each receiver after the recv that orders the
    two dram accesses)."""
    a, *rest = draw(st.permutations(sorted(ctxs)))
    many = draw(st.booleans())  # an mcast, to one core or more
    dsts = sorted(rest[: int(draw(st.integers(1, len(rest))))] if many else rest[:1])
    tag = int(draw(st.sampled_from([k % 2, 7, 65535])))
    r, c, dt = _dim(draw), _dim(draw), _dtype(draw)
    sent = _sp(draw, ctxs[a], dt, r, c)
    at = {b: len(items[b]) for b in dsts}
    if draw(st.booleans()):  # through mail
        slot = replace(MAIL, addr=MAIL.addr + k * MAIL_SLOT, nbytes=MAIL_SLOT)
        box = decl_view(draw, slot, r, c, dt)
        box = replace(box, symbol="mail", offset=box.addr - MAIL.addr) if box.symbol else box
        items[a].append(Instr("dma", (box, _sp(draw, ctxs[a], dt, box.rows, box.cols))))
        for b in dsts:  # b's read goes after its recv
            items[b].append(Instr("dma", (_sp(draw, ctxs[b], dt, box.rows, box.cols), box)))
    peers = CoreSet(tuple(dsts)) if many else Imm(dsts[0])
    items[a].append(Instr("mcast" if many else "send", (peers, sent, Imm(tag))))
    for b in dsts:
        items[b].insert(at[b], Instr("recv", (Imm(a), _sp(draw, ctxs[b], dt, r, c), Imm(tag))))


@st.composite
def _epoch(draw: Draw, ctxs: dict[int, Ctx]) -> dict[int, list[CoreItem]]:
    """One barrier epoch: random work on every core, messages and mail handoffs."""
    items: dict[int, list[CoreItem]] = {c: [] for c in ctxs}
    for ctx in ctxs.values():
        _work(draw, ctx, items[ctx.core], 4)
    handoffs = int(draw(st.integers(0, 3))) if len(ctxs) > 1 else 0
    for k in range(handoffs):
        _handoff(draw, ctxs, items, k)
        for ctx in ctxs.values():
            _work(draw, ctx, items[ctx.core], 1)
    return items


@st.composite
def programs(draw: Draw, geo: Geometry = TINY_GEOMETRY, max_cores: int = 4) -> Program:
    count = int(draw(st.integers(1, min(geo.cores, max_cores))))
    if geo.cores <= max_cores and draw(st.integers(0, 2)):
        ids = list(range(geo.cores))  # usually every core of a small chip
    else:
        ids = sorted(draw(st.sets(st.integers(0, geo.cores - 1), min_size=count, max_size=count)))
    ctxs = {c: Ctx.for_core(c, owner=c == ids[0], geo=geo) for c in ids}
    cores: dict[int, list[CoreItem]] = {c: [] for c in ids}
    epochs = int(draw(st.integers(1, 3)))
    for e in range(epochs):
        for c, items in draw(_epoch(ctxs)).items():
            cores[c].extend(items)
            if e < epochs - 1:
                cores[c].append(Instr("barrier", ()))
    decls = [*DECLS, *(private_region(c) for c in ids[1:])] + ([MAIL] if len(ids) > 1 else [])
    header: list[Decl | Comment] = [replace(d, comment=draw(_comment)) for d in decls]
    if draw(st.booleans()):
        header.insert(int(draw(st.integers(0, len(header)))), Comment(str(draw(_text))))
    streams = tuple(CoreStream(c, (*cores[c], Instr("halt", ()))) for c in ids)
    consts = draw(st.sampled_from([None, "tiny.safetensors", "weights/w.safetensors"]))
    return Program(geo.arch, consts, tuple(header), streams, "<generated>")
