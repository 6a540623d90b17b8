"""Parse CIM assembly text into a typed `Program`, checking every operand against the table.

Syntax comes from isa/cim.lark; everything else (opcode names, operand kinds, spaces, dtypes,
shapes, symbols, section structure) is checked here, and every problem is a `CimcError` at
`FILE:LINE:COL` that says what to write instead.
"""

from __future__ import annotations

import difflib
import functools
import re
from pathlib import Path
from typing import cast

import lark

from cimc.errors import CimcError
from cimc.machine.arch import MAX_CORES
from cimc.machine.fastparse import fast_tree
from cimc.machine.numbers import MAX_DIGITS, LongNumber, digits, grammar_int
from cimc.machine.opcodes import (
    I64_MAX,
    I64_MIN,
    OPCODES,
    OperandError,
    check_operands,
    describe_error,
)
from cimc.machine.program import (
    DECL_KINDS,
    DTYPE_BYTES,
    DTYPES,
    SHARED_SPACES,
    SPACES,
    Comment,
    CoreItem,
    CoreSet,
    CoreStream,
    Decl,
    DeclKind,
    DType,
    HeaderItem,
    Imm,
    Instr,
    MacroRef,
    Persist,
    Program,
    Space,
    View,
)
from cimc.resources import isa_dir

_MACRO_NAME = re.compile(r"m([0-9]+)")
ARCH_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_DECL_SPACES = {
    "const": ("flash", "dram", "gb"),
    "input": ("dram", "gb"),
    "output": ("dram", "gb"),
    "region": ("dram", "gb"),
    "state": ("dram", "gb"),
}


@functools.cache
def grammar() -> lark.Lark:
    text = (isa_dir() / "cim.lark").read_text()
    return lark.Lark(text, parser="lalr", propagate_positions=True, maybe_placeholders=False)


def load_program(path: str | Path) -> Program:
    """Read and parse an assembly file (the path becomes the source name of every location)."""
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise CimcError(
            f"cannot read the program: {getattr(e, 'strerror', None) or e}", str(p)
        ) from None
    return parse_program(text, str(p))


def parse_program(text: str, source_name: str = "<program>") -> Program:
    """Parse `text`; `source_name` names the file in error locations."""
    if not text.endswith("\n"):
        text += "\n"
    tree = fast_tree(text)  # Lark's tree for the common line forms, several times faster
    if tree is None:
        tree = lark_tree(text, source_name)
    return _Builder(source_name).build(tree)


def lark_tree(text: str, source_name: str = "<program>") -> lark.Tree:
    """The parse tree from the grammar itself (syntax errors become CimcErrors)."""
    try:
        return grammar().parse(text)
    except lark.UnexpectedInput as e:
        raise _syntax_error(e, text, source_name) from None


def _syntax_error(e: lark.UnexpectedInput, text: str, source: str) -> CimcError:
    loc = f"{source}:{e.line}:{e.column}"
    if isinstance(e, lark.UnexpectedToken):
        got = "end of line" if e.token.type == "_NL" else repr(str(e.token))
        if e.token.type == "PATH" and "PATH" not in e.expected:
            got = repr(str(e.token)[0])  # the catch-all PATH token swallowed what follows
    else:
        got = repr(text[e.pos_in_stream]) if e.pos_in_stream is not None else "input"
    expected = sorted(getattr(e, "expected", None) or getattr(e, "allowed", None) or ())
    hint = _expected_hint(expected)
    return CimcError(f"syntax error: unexpected {got}{hint}", loc)


_TERMINAL_WORDS = {
    "LSQB": "'['",
    "RSQB": "']'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "COLON": "':'",
    "COMMA": "','",
    "PLUS": "'+'",
    "SHAPE": "a shape like 7x96 or 7x96/128",
    "INT": "an integer",
    "CORE_RANGE": "a core id or range like 4-7",
    "SIGNED_INT": "an integer",
    "NAME": "a name",
    "PATH": "a path",
    "MNEMONIC": "an opcode",
    "_NL": "end of line",
    "COMMENT": "a comment",
}


def _expected_hint(expected: list[str]) -> str:
    words = sorted({_TERMINAL_WORDS.get(t, t.lower()) for t in expected if not t.startswith("__")})
    if not words or len(words) > 6:
        return "; see isa/SPEC.md 'Program text' for the line syntax"
    return f"; expected {' or '.join(words)}"


def _comment(node: lark.Tree | None) -> str | None:
    """Trailing comment text without ';' and surrounding blanks."""
    return None if node is None else str(node.children[0])[1:].strip()


def _split_comment(children: list) -> tuple[list, str | None]:
    if children and isinstance(children[-1], lark.Tree) and children[-1].data == "comment":
        return children[:-1], _comment(children[-1])
    return children, None


class _Builder:
    """Walks the parse tree once, in source order, tracking which section it is in."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.arch: str | None = None
        self.consts: str | None = None
        self.consts_sha256: str | None = None
        self.consts_line = 0
        self.header: list[HeaderItem] = []
        self.decls: dict[str, Decl] = {}
        self.cores: list[CoreStream] = []
        self.core_id: int | None = None
        self.core_line = 0
        self.items: list[CoreItem] = []
        self.views: dict[View, View] = {}

    def err(self, message: str, meta_or_tok: object) -> CimcError:
        line = getattr(meta_or_tok, "line", 0)
        col = getattr(meta_or_tok, "column", 0)
        return CimcError(message, f"{self.source}:{line}:{col}")

    def build(self, tree: lark.Tree) -> Program:
        for node in tree.children:
            try:
                getattr(self, f"_on_{node.data}")(node)
            except LongNumber as e:
                text = str(e.token)
                raise self.err(
                    f"number {text[:12]}... is too long; write at most {MAX_DIGITS} digits",
                    e.token,
                ) from None
        self._close_core()
        if self.arch is None:
            raise CimcError(
                "missing '.arch NAME' line; start the program with e.g. '.arch default'",
                f"{self.source}:1:1",
            )
        return Program(
            self.arch,
            self.consts,
            tuple(self.header),
            tuple(self.cores),
            self.source,
            self.consts_line,
            self.consts_sha256,
        )

    # --- header --------------------------------------------------------------------------

    def _on_comment(self, node: lark.Tree) -> None:
        text = _comment(node) or ""
        (self.items if self.core_id is not None else self.header).append(Comment(text))

    def _on_arch(self, node: lark.Tree) -> None:
        if self.arch is not None or self.core_id is not None or self.decls:
            raise self.err("'.arch' must come first (after comments) and appear once", node.meta)
        children, comment = _split_comment(node.children)
        self.arch = str(children[0])
        if not ARCH_NAME.fullmatch(self.arch):
            raise self.err(
                f"arch {self.arch!r} is not a preset name (letters, digits, '_', '-', '.'); "
                f"name the preset the program was compiled for, not a file",
                children[0],
            )
        if comment is not None:  # kept, on its own line
            self.header.append(Comment(comment))

    def _on_consts(self, node: lark.Tree) -> None:
        if self.consts is not None:
            raise self.err("duplicate '.consts'; a program has one constants file", node.meta)
        if self.arch is None or self.decls or self.core_id is not None:
            raise self.err("'.consts' must follow '.arch' and precede the declarations", node.meta)
        children, comment = _split_comment(node.children)
        self.consts, self.consts_line = str(children[0]), node.meta.line
        if len(children) > 1:  # CONSTS_HASH: sha256:HEX
            self.consts_sha256 = str(children[1]).removeprefix("sha256:")
        if comment is not None:
            self.header.append(Comment(comment))

    def _on_decl(self, node: lark.Tree) -> None:
        if self.arch is None:
            raise self.err("declaration before '.arch'; start with e.g. '.arch default'", node.meta)
        if self.core_id is not None:
            raise self.err("declarations must come before the first '.core'", node.meta)
        children, comment = _split_comment(node.children)
        kw, name, space, addr, typ = children
        kind = str(kw)[1:]
        assert kind in DECL_KINDS
        allowed = _DECL_SPACES[kind]
        if str(space) not in allowed:
            raise self.err(f"a .{kind} lives in {', '.join(allowed)}, not {str(space)!r}", space)
        if str(name) in self.decls:
            first = self.decls[str(name)]
            raise self.err(
                f"duplicate declaration of {str(name)!r} (first at line {first.line})", name
            )
        dtype, rows, cols, nbytes = self._decl_type(typ, kind)
        decl = Decl(
            cast(DeclKind, kind),
            str(name),
            cast(Space, str(space)),
            grammar_int(addr),
            dtype,
            rows,
            cols,
            nbytes,
            comment,
            node.meta.line,
            node.meta.column,
        )
        self.decls[decl.name] = decl
        self.header.append(decl)

    def _decl_type(self, typ: object, kind: str) -> tuple[DType | None, int, int, int]:
        if isinstance(typ, lark.Token):
            if kind != "region":
                raise self.err(f"a .{kind} needs a type like i8[7x96], not a byte count", typ)
            nbytes = grammar_int(typ)
            if nbytes <= 0:
                raise self.err("a region needs a positive byte count", typ)
            return None, 0, 0, nbytes
        assert isinstance(typ, lark.Tree)
        if kind == "region":
            raise self.err("a .region takes a byte count (e.g. 4096), not a typed shape", typ.meta)
        dtype_tok, shape_tok = typ.children
        dtype = cast(DType, self._dtype(dtype_tok))
        rows, cols, stride = self._shape(shape_tok)
        if stride != cols:
            raise self.err("a declaration cannot have a row stride; declare RxC", shape_tok)
        return dtype, rows, cols, rows * cols * DTYPE_BYTES[dtype]

    def _dtype(self, tok: object) -> str:
        if str(tok) not in DTYPES:
            raise self.err(f"unknown dtype {str(tok)!r}; use one of {', '.join(DTYPES)}", tok)
        return str(tok)

    def _shape(self, tok: object) -> tuple[int, int, int]:
        dims, _, stride_text = str(tok).partition("/")
        rows, cols = (digits(d, 10, tok) for d in dims.split("x"))
        stride = digits(stride_text, 10, tok) if stride_text else cols
        if rows <= 0 or cols <= 0:
            raise self.err(f"shape {dims} must have positive rows and columns", tok)
        if stride < cols:
            raise self.err(f"row stride {stride} is below the {cols} columns; use >= {cols}", tok)
        return rows, cols, stride

    def _on_persist(self, node: lark.Tree) -> None:
        if self.arch is None:
            raise self.err("'.persist' before '.arch'; start with e.g. '.arch default'", node.meta)
        if self.core_id is not None:
            raise self.err("'.persist' must come before the first '.core'", node.meta)
        children, comment = _split_comment(node.children)
        core, name = grammar_int(children[0]), children[1]
        m = _MACRO_NAME.fullmatch(str(name))
        if m is None:
            raise self.err(f"'.persist' takes a core id and a macro mN, not {str(name)!r}", name)
        item = Persist(core, int(m.group(1)), comment, node.meta.line, node.meta.column)
        if any((p.core, p.macro) == (item.core, item.macro) for p in self._persists()):
            raise self.err(f"duplicate '.persist {core} {name}'", node.meta)
        self.header.append(item)

    def _persists(self) -> list[Persist]:
        return [item for item in self.header if isinstance(item, Persist)]

    # --- core sections -------------------------------------------------------------------

    def _on_core(self, node: lark.Tree) -> None:
        if self.arch is None:
            raise self.err("'.core' before '.arch'; start the program with '.arch NAME'", node.meta)
        children, comment = _split_comment(node.children)
        core_id = grammar_int(children[0])
        if any(c.core == core_id for c in self.cores) or core_id == self.core_id:
            raise self.err(
                f"duplicate '.core {core_id}'; put all of its code in one section", node.meta
            )
        self._close_core()
        self.core_id, self.core_line = core_id, node.meta.line
        if comment is not None:
            self.items.append(Comment(comment))

    def _close_core(self) -> None:
        if self.core_id is not None:
            self.cores.append(CoreStream(self.core_id, tuple(self.items), self.core_line))
        self.core_id, self.items = None, []

    def _on_instr(self, node: lark.Tree) -> None:
        if self.core_id is None:
            raise self.err("instruction outside a core section; add '.core N' above it", node.meta)
        children, comment = _split_comment(node.children)
        mnemonic, operand_nodes = str(children[0]), children[1:]
        spec = OPCODES.get(mnemonic)
        if spec is None:
            raise self.err(f"unknown opcode {mnemonic!r}{_suggest(mnemonic)}", node.meta)
        operands = tuple(getattr(self, f"_op_{n.data}")(n) for n in operand_nodes)
        cols = tuple(n.meta.column for n in operand_nodes)
        try:
            operands = check_operands(spec, operands)
        except OperandError as e:
            col = cols[e.index] if e.index is not None else node.meta.column
            raise CimcError(
                describe_error(spec, e), f"{self.source}:{node.meta.line}:{col}"
            ) from None
        self.items.append(
            Instr(mnemonic, operands, comment, node.meta.line, node.meta.column, cols)
        )

    def _op_imm(self, node: lark.Tree) -> Imm:
        value = grammar_int(node.children[0])
        if not I64_MIN <= value <= I64_MAX:
            raise self.err(f"immediate {value} does not fit in int64", node.meta)
        return Imm(value)

    def _op_cores(self, node: lark.Tree) -> CoreSet:
        cores: list[int] = []
        for tok in node.children:
            lo, _, hi = str(tok).partition("-")
            first, last = digits(lo, 10, tok), digits(hi or lo, 10, tok)
            if last >= MAX_CORES:
                raise self.err(f"core {last} is out of range; core ids are below {MAX_CORES}", tok)
            if first > last:
                raise self.err(f"empty core range {tok}; write it as {last}-{first}", tok)
            if cores and first <= cores[-1]:
                raise self.err(
                    f"core {first} does not follow core {cores[-1]}; list the cores of a "
                    f"set in ascending order, each once",
                    tok,
                )
            cores.extend(range(first, last + 1))
        return CoreSet(tuple(cores))

    def _op_bare(self, node: lark.Tree) -> MacroRef:
        name = str(node.children[0])
        match = _MACRO_NAME.fullmatch(name)
        if match is None:
            raise self.err(
                f"{name!r} is not an operand; write a view SPACE[ADDR]:DTYPE[RxC], "
                f"a macro mN or mN[r0:r1,c0:c1], or an integer",
                node.meta,
            )
        return MacroRef(digits(match.group(1), 10, node.children[0]), 0, 0, 0, 0, whole=True)

    def _op_window(self, node: lark.Tree) -> MacroRef:
        name, r0, r1, c0, c1 = node.children
        match = _MACRO_NAME.fullmatch(str(name))
        if match is None:
            raise self.err(
                f"{str(name)!r} is not a macro; a macro window is mN[r0:r1,c0:c1]", node.meta
            )
        rows, cols = (grammar_int(r0), grammar_int(r1)), (grammar_int(c0), grammar_int(c1))
        if rows[0] >= rows[1] or cols[0] >= cols[1]:
            raise self.err(
                f"empty macro window {str(name)}[{rows[0]}:{rows[1]},"
                f"{cols[0]}:{cols[1]}]; use r0 < r1 and c0 < c1",
                node.meta,
            )
        index = digits(match.group(1), 10, name)
        return MacroRef(index, rows[0], rows[1], cols[0], cols[1])

    def _op_view(self, node: lark.Tree) -> View:
        space_tok, addr_node, dtype_tok, shape_tok = node.children
        space = str(space_tok)
        if space not in SPACES:
            raise self.err(f"unknown memory space {space!r}; use {', '.join(SPACES)}", space_tok)
        addr, symbol, offset = self._address(space, addr_node)
        dtype = self._dtype(dtype_tok)
        rows, cols, stride = self._shape(shape_tok)
        view = View(
            cast(Space, space), addr, cast(DType, dtype), rows, cols, stride, symbol, offset
        )
        return self.views.setdefault(view, view)  # one object per value (ProgramBuilder._interned)

    def _address(self, space: str, node: lark.Tree) -> tuple[int, str | None, int]:
        if node.data == "abs_addr":
            return grammar_int(node.children[0]), None, 0
        name = str(node.children[0])
        offset = grammar_int(node.children[1]) if node.data == "sym_off_addr" else 0
        decl = self.decls.get(name)
        if decl is None:
            raise self.err(
                f"undeclared symbol {name!r}; declare it with .const, .input, "
                f".output, .region or .state before the first .core",
                node.meta,
            )
        if space not in SHARED_SPACES:
            raise self.err(
                f"symbols name gb/dram/flash data; an {space} address is a number", node.meta
            )
        if decl.space != space:
            raise self.err(
                f"{name!r} is declared in {decl.space}, not {space}; write {decl.space}[{name}...]",
                node.meta,
            )
        return decl.addr + offset, name, offset


def _suggest(mnemonic: str) -> str:
    close = difflib.get_close_matches(mnemonic, list(OPCODES), n=1)
    return f"; did you mean {close[0]!r}?" if close else "; see isa/SPEC.md for the opcode list"
