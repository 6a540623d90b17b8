"""A fast path for the common lines of `isa/cim.lark`: builds the very tree Lark would.

Lark's LALR parser is several times slower per line than this fast path, and compiled
programs have 10^4-10^5 lines (benchmarks/FINDINGS.md, "Assembly parser fast path"). Each
line form of the grammar (instruction, directive, declaration, comment, blank) has one
regular expression below that accepts a subset of what the grammar accepts; a text whose
every line matches is turned into the same `lark.Tree` (same data, tokens, line and column)
as `grammar().parse`. Any other text returns None and goes through Lark, which then reports
the syntax error. tests/machine/test_parser_fastpath.py proves the two agree on
generated, hand-written, malformed and randomly mutated programs.
"""

from __future__ import annotations

import re
from typing import Literal

from lark import Token, Tree
from lark.tree import Meta

_WS = r"[ \t]*"
_INT = r"0x[0-9a-fA-F]+|[0-9]+"
_SIGNED = r"[+-]?(?:0x[0-9a-fA-F]+|[0-9]+)"
_NAME = r"[A-Za-z_][A-Za-z0-9_.]*"
_SHAPE = r"[0-9]+x[0-9]+(?:/[0-9]+)?"
_PATH = r"[^\s;,]+"
_CORE_RANGE = r"[0-9]+(?:-[0-9]+)?"
_COMMENT = rf"(?:{_WS}(?P<comment>;.*))?{_WS}$"

_BLANK = re.compile(rf"{_WS}$")
_COMMENT_LINE = re.compile(rf"{_WS}(?P<comment>;.*)$")
_INSTR = re.compile(rf"{_WS}(?P<mn>[a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)*)(?=[ \t;]|$)")
_DIRECTIVE = re.compile(
    rf"{_WS}(?P<kw>\.arch|\.consts)[ \t]+(?P<path>{_PATH})"
    rf"(?:[ \t]+(?P<hash>sha256:[0-9a-f]{{64}}))?{_COMMENT}"
)
_CORE = re.compile(rf"{_WS}(?P<kw>\.core)[ \t]+(?P<id>{_INT}){_COMMENT}")
_PERSIST = re.compile(
    rf"{_WS}(?P<kw>\.persist)[ \t]+(?P<id>{_INT})[ \t]+(?P<macro>{_NAME}){_COMMENT}"
)
_DECL = re.compile(
    rf"{_WS}(?P<kw>\.(?:const|input|output|region|state))[ \t]+(?P<name>{_NAME})[ \t]+"
    rf"(?P<space>{_NAME}){_WS}\[{_WS}(?P<addr>{_INT}){_WS}\]{_WS}"
    rf"(?:(?P<dtype>{_NAME}){_WS}\[{_WS}(?P<shape>{_SHAPE}){_WS}\]|(?P<nbytes>{_INT}))"
    rf"{_COMMENT}"
)
_OPERAND = re.compile(
    rf"""{_WS}(?:
      (?P<vs>{_NAME}){_WS}\[{_WS}(?:(?P<va>{_INT})|(?P<vn>{_NAME})(?:{_WS}(?P<plus>\+){_WS}
        (?P<vo>{_INT}))?){_WS}\]{_WS}:{_WS}(?P<vd>{_NAME}){_WS}\[{_WS}(?P<vsh>{_SHAPE}){_WS}\]
     |(?P<wn>{_NAME}){_WS}\[{_WS}(?P<r0>{_INT}){_WS}:{_WS}(?P<r1>{_INT}){_WS},{_WS}
        (?P<c0>{_INT}){_WS}:{_WS}(?P<c1>{_INT}){_WS}\]
     |\{{(?P<cs>{_WS}{_CORE_RANGE}(?:{_WS},{_WS}{_CORE_RANGE})*{_WS})\}}
     |(?P<imm>{_SIGNED})(?![A-Za-z0-9_.])
     |(?P<bare>{_NAME})
    ){_WS}(?P<sep>,|;|$)""",
    re.X,
)
_RANGE = re.compile(_CORE_RANGE)
_TAIL = re.compile(rf"{_WS}(?P<comment>;.*)?$")


def _token(kind: str, value: str, line: int, start: int, end: int) -> Token:
    """A real lark Token, built without Token.__new__'s keyword shims (it runs per token)."""
    tok = str.__new__(Token, value)
    tok.type, tok.value = kind, value
    tok.line, tok.column, tok.start_pos = line, start + 1, start
    tok.end_line, tok.end_column, tok.end_pos = line, end + 1, end
    return tok


class _Line:
    """Token and tree factories that stamp positions of one source line."""

    def __init__(self, text: str, number: int) -> None:
        self.text, self.number = text, number

    def tok(self, kind: str, m: re.Match[str], group: str) -> Token:
        start, end = m.span(group)
        return _token(kind, m.group(group), self.number, start, end)

    def tree(self, data: str, children: list, column: int) -> Tree:
        meta = Meta()
        meta.line, meta.column, meta.empty = self.number, column, False
        return Tree(data, children, meta)

    def comment(self, m: re.Match[str]) -> list[Tree]:
        if m.group("comment") is None:
            return []
        return [self.tree("comment", [self.tok("COMMENT", m, "comment")], m.start("comment") + 1)]


def fast_tree(text: str) -> Tree | None:
    """The parse tree of `text` (ending with a newline), or None if a line needs Lark."""
    if "\r" in text:
        return None
    items: list[Tree] = []
    for number, line in enumerate(text.split("\n")[:-1], start=1):
        item = _parse_line(_Line(line, number))
        if item is False:
            return None
        if item is not None:
            items.append(item)
    return Tree("start", items)


def _parse_line(ln: _Line) -> Tree | None | Literal[False]:
    text = ln.text
    if _BLANK.match(text):
        return None
    m = _COMMENT_LINE.match(text)
    if m:
        return ln.comment(m)[0]
    if text.lstrip().startswith("."):
        return _directive(ln)
    m = _INSTR.match(text)
    return _instr(ln, m) if m else False


def _directive(ln: _Line) -> Tree | Literal[False]:
    m = _DIRECTIVE.match(ln.text)
    if m:
        data = m.group("kw")[1:]
        if m.group("hash") is not None and data == "arch":
            return False  # not in the grammar: Lark reports it
        digest = [ln.tok("CONSTS_HASH", m, "hash")] if m.group("hash") is not None else []
        children = [ln.tok("PATH", m, "path"), *digest, *ln.comment(m)]
        return ln.tree(data, children, m.start("kw") + 1)
    m = _CORE.match(ln.text)
    if m:
        return ln.tree("core", [ln.tok("INT", m, "id"), *ln.comment(m)], m.start("kw") + 1)
    m = _PERSIST.match(ln.text)
    if m:
        children = [ln.tok("INT", m, "id"), ln.tok("NAME", m, "macro"), *ln.comment(m)]
        return ln.tree("persist", children, m.start("kw") + 1)
    m = _DECL.match(ln.text)
    if not m:
        return False
    if m.group("nbytes") is not None:
        typ: Token | Tree = ln.tok("INT", m, "nbytes")
    else:
        dtype = ln.tok("NAME", m, "dtype")
        typ = ln.tree("dtype_shape", [dtype, ln.tok("SHAPE", m, "shape")], m.start("dtype") + 1)
    children = [
        ln.tok("DECL", m, "kw"),
        ln.tok("NAME", m, "name"),
        ln.tok("NAME", m, "space"),
        ln.tok("INT", m, "addr"),
        typ,
        *ln.comment(m),
    ]
    return ln.tree("decl", children, m.start("kw") + 1)


def _instr(ln: _Line, m: re.Match[str]) -> Tree | Literal[False]:
    children: list = [ln.tok("MNEMONIC", m, "mn")]
    pos = m.end()
    tail = _TAIL.match(ln.text, pos)
    if not tail:
        if not ln.text[pos : pos + 1].isspace():
            return False
        while True:
            op = _OPERAND.match(ln.text, pos)
            if not op:
                return False
            children.append(_operand(ln, op))
            pos = op.end()
            if op.group("sep") != ",":
                break
        if op.group("sep") == ";":
            pos = op.start("sep")
        tail = _TAIL.match(ln.text, pos)
        if not tail:
            return False
    children.extend(ln.comment(tail))
    return ln.tree("instr", children, m.start("mn") + 1)


def _operand(ln: _Line, m: re.Match[str]) -> Tree:
    if m.group("vs") is not None:
        space = ln.tok("NAME", m, "vs")
        if m.group("va") is not None:
            addr = ln.tree("abs_addr", [ln.tok("INT", m, "va")], m.start("va") + 1)
        else:
            name = ln.tok("NAME", m, "vn")
            at = m.start("vn") + 1
            if m.group("vo") is None:
                addr = ln.tree("sym_addr", [name], at)
            else:
                addr = ln.tree("sym_off_addr", [name, ln.tok("INT", m, "vo")], at)
        children = [space, addr, ln.tok("NAME", m, "vd"), ln.tok("SHAPE", m, "vsh")]
        return ln.tree("view", children, m.start("vs") + 1)
    if m.group("wn") is not None:
        ints = [ln.tok("INT", m, g) for g in ("r0", "r1", "c0", "c1")]
        return ln.tree("window", [ln.tok("NAME", m, "wn"), *ints], m.start("wn") + 1)
    if m.group("cs") is not None:
        base = m.start("cs")
        ranges = [
            _token("CORE_RANGE", r.group(), ln.number, base + r.start(), base + r.end())
            for r in _RANGE.finditer(m.group("cs"))
        ]
        return ln.tree("cores", ranges, base)  # base - 1 is the "{", base its 1-based column
    if m.group("imm") is not None:
        return ln.tree("imm", [ln.tok("SIGNED_INT", m, "imm")], m.start("imm") + 1)
    return ln.tree("bare", [ln.tok("NAME", m, "bare")], m.start("bare") + 1)
