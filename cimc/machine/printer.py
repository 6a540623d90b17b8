"""Print a `Program` as canonical assembly text (parse(print(p)) == p).

Canonical layout: `.arch`, `.consts`, then header items (declarations with aligned columns,
full-line comments), then each core after a blank line; instructions indented two spaces,
the mnemonic padded to 8 columns, operands separated by ", ", the trailing comment at column
COMMENT_COL (or two spaces after a longer line); addresses and offsets in lowercase hex,
immediates, shapes and byte counts in decimal.
"""

from __future__ import annotations

import re

from cimc.errors import CimcError
from cimc.machine.parser import ARCH_NAME
from cimc.machine.program import (
    Comment,
    CoreSet,
    CoreStream,
    Decl,
    Imm,
    Instr,
    MacroRef,
    Operand,
    Persist,
    Program,
    View,
)

COMMENT_COL = 64
INDENT = "  "


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_PATH = re.compile(r"[^\s;,]+")


def _checked(pattern: re.Pattern[str], text: str, what: str) -> str:
    """Refuse names the grammar cannot read back (the file would not parse)."""
    if not pattern.fullmatch(text):
        raise CimcError(f"{what} {text!r} cannot be written in assembly; use {pattern.pattern}")
    return text


def print_program(program: Program) -> str:
    lines = [f".arch {_checked(ARCH_NAME, program.arch_name, 'arch name')}"]
    if program.consts_file is not None:
        digest = f" sha256:{program.consts_sha256}" if program.consts_sha256 else ""
        lines.append(f".consts {_checked(_PATH, program.consts_file, 'constants path')}{digest}")
    for item in program.header:
        if isinstance(item, Decl):
            lines.append(_with_comment(print_decl(item), item.comment))
        elif isinstance(item, Persist):
            lines.append(_with_comment(f".persist {item.core} m{item.macro}", item.comment))
        else:
            lines.append(f"; {_one_line(item.text)}".rstrip())
    for stream in program.cores:
        lines.append("")
        lines.extend(_core_lines(stream))
    return "\n".join(lines) + "\n"


def _core_lines(stream: CoreStream) -> list[str]:
    lines = [f".core {stream.core}"]
    for item in stream.items:
        if isinstance(item, Comment):
            lines.append(f"{INDENT}; {_one_line(item.text)}".rstrip())
        else:
            lines.append(print_instr(item))
    return lines


def _one_line(text: str) -> str:
    """Comment text as it can appear on one line (a newline would end the comment)."""
    return text.replace("\r", " ").replace("\n", " ").strip()


def _with_comment(body: str, comment: str | None) -> str:
    if comment is None:
        return body
    return f"{body.ljust(COMMENT_COL - 2)}  ; {_one_line(comment)}".rstrip()


def print_instr(instr: Instr) -> str:
    """One canonical instruction line, indented, with its trailing comment."""
    operands = ", ".join(print_operand(op) for op in instr.operands)
    body = f"{INDENT}{instr.opcode:<8} {operands}".rstrip()
    return _with_comment(body, instr.comment)


def print_decl(decl: Decl) -> str:
    _checked(_NAME, decl.name, "declaration name")
    place = f"{decl.space}[{decl.addr:#x}]"
    typ = str(decl.nbytes) if decl.dtype is None else f"{decl.dtype}[{decl.rows}x{decl.cols}]"
    return f".{decl.kind:<7} {decl.name:<15} {place:<15} {typ}"


def print_operand(op: Operand) -> str:
    if isinstance(op, View):
        return print_view(op)
    if isinstance(op, MacroRef):
        return f"m{op.index}" if op.whole else f"m{op.index}[{op.r0}:{op.r1},{op.c0}:{op.c1}]"
    if isinstance(op, CoreSet):
        return print_cores(op.cores)
    assert isinstance(op, Imm)
    return str(op.value)


def print_cores(cores: tuple[int, ...]) -> str:
    """`{0,2-5}`: runs of three or more consecutive ids as ranges."""
    parts: list[str] = []
    i = 0
    while i < len(cores):
        j = i
        while j + 1 < len(cores) and cores[j + 1] == cores[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{cores[i]}-{cores[j]}")
        else:
            parts.extend(str(c) for c in cores[i : j + 1])
        i = j + 1
    return "{" + ",".join(parts) + "}"


def print_view(view: View) -> str:
    if view.symbol is None:
        addr = f"{view.addr:#x}"
    elif view.offset:
        addr = f"{view.symbol}+{view.offset:#x}"
    else:
        addr = view.symbol
    stride = "" if view.stride == view.cols else f"/{view.stride}"
    return f"{view.space}[{addr}]:{view.dtype}[{view.rows}x{view.cols}{stride}]"
