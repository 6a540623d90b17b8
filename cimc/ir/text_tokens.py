"""Tokens of the IR text form (shared by the graph parser and any later IR level)."""

from __future__ import annotations

import bisect
import json
import re
from typing import NamedTuple, NoReturn

from cimc.errors import CimcError

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+|//[^\n]*)
  | (?P<value>%(?:[A-Za-z0-9_.$\-]+|"(?:[^"\\]|\\.)*"))
  | (?P<symbol>@(?:[A-Za-z0-9_.$\-]+|"(?:[^"\\]|\\.)*"))
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<number>-?(?:inf|nan|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[=(){}\[\],:<>])
  | (?P<error>.)
    """,
    re.VERBOSE | re.DOTALL,
)


class Token(NamedTuple):
    kind: str
    text: str
    offset: int  # into the source text; `SourceText.where` turns it into line:col


class SourceText:
    """A source text and its name, able to locate an offset as ``name:line:col``."""

    def __init__(self, text: str, name: str) -> None:
        self.text = text
        self.name = name
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def where(self, offset: int) -> str:
        line = bisect.bisect_right(self._line_starts, offset)
        return f"{self.name}:{line}:{offset - self._line_starts[line - 1] + 1}"


def tokenize(source: SourceText) -> list[Token]:
    """All tokens but whitespace and comments, ending with an `eof` token."""
    tokens = [
        Token(m.lastgroup or "", m.group(), m.start())
        for m in _TOKEN.finditer(source.text)
        if m.lastgroup != "ws"
    ]
    for t in tokens:
        if t.kind == "error":
            raise CimcError(f"unexpected character {t.text!r}", source.where(t.offset))
    tokens.append(Token("eof", "", len(source.text)))
    return tokens


class TokenStream:
    """A cursor over the tokens of a source text; `fail` raises a located CimcError."""

    def __init__(self, source: SourceText) -> None:
        self.tokens = tokenize(source)
        self.pos = 0
        self.source = source

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def next(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def at(self, kind: str, text: str | None = None) -> bool:
        t = self.peek()
        return t.kind == kind and (text is None or t.text == text)

    def accept(self, kind: str, text: str | None = None) -> Token | None:
        return self.next() if self.at(kind, text) else None

    def expect(self, kind: str, text: str | None = None) -> Token:
        if not self.at(kind, text):
            wanted = repr(text) if text else kind
            got = repr(self.peek().text) if self.peek().kind != "eof" else "end of input"
            self.fail(f"expected {wanted}, got {got}")
        return self.next()

    def fail(self, message: str, token: Token | None = None) -> NoReturn:
        t = token or self.peek()
        raise CimcError(message, self.source.where(t.offset))

    @staticmethod
    def name_of(token: Token) -> str:
        """The name of a %value or @symbol token (bare or a JSON string)."""
        body = token.text[1:]
        return str(json.loads(body)) if body.startswith('"') else body
