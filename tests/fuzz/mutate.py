"""Text mutations of assembly programs and arch presets, driven by a seeded `random.Random`.

Each mutation is a small edit a user (or a buggy generator) could make: delete, duplicate,
swap or truncate lines; change a number, an opcode, a dtype, a space, a shape, a core id;
move blanks and punctuation; flip bytes. `mutate(text, rng)` applies one to four of them.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from cimc.machine.opcodes import OPCODES

_NUMBER = re.compile(r"-?(?:0x[0-9a-fA-F]+|[0-9]+(?:\.[0-9]+)?)")
_DTYPE = re.compile(r"\bi(?:8|16|32|64)\b")
_SPACE = re.compile(r"\b(?:sp|gb|dram|flash)(?=\[)")
_SHAPE = re.compile(r"\b[0-9]+x[0-9]+(?:/[0-9]+)?\b")
_MNEMONIC = re.compile(r"^(\s+)([a-z_][a-z0-9_.]*)", re.M)
_TOKEN = re.compile(r"[^\s,\[\]:;]+")

INTERESTING_NUMBERS = (
    "0", "1", "-1", "2", "7", "8", "31", "32", "33", "63", "64", "127", "128", "255", "256",
    "-128", "65535", "65536", "0x7fffffff", "0x80000000", "2147483647", "-2147483648",
    "9223372036854775807", "-9223372036854775808", "9223372036854775808",
    "18446744073709551616", "1000000000000", "0xffffffffffff", "99999999999999999999999",
    "0x0", "0x10", "0x4000", "0x3fff", "4194304", "16384", "16383", "1.5", "1e400", "nan",
)  # fmt: skip
DTYPE_CHOICES = ("i8", "i16", "i32", "i64", "i4", "u8", "f32", "i128", "I8", "")
SPACE_CHOICES = ("sp", "gb", "dram", "flash", "sram", "SP", "m0", "")
SHAPE_CHOICES = (
    "1x1", "0x4", "4x0", "1x256", "32x32", "33x32", "128x128", "129x1", "8x8/4", "8x8/8",
    "8x8/1000000", "1000000x1000000", "65536x65536", "4294967296x1", "1x1/0", "7x96/128",
)  # fmt: skip
JUNK = (",", ";", "[", "]", ":", "+", "-", " ", "\t", "\r\n", "\\", "\x00", "é", "m99", "x")


def _lines(text: str) -> list[str]:
    return text.split("\n")


def _pick_line(lines: list[str], rng: random.Random) -> int:
    return rng.randrange(len(lines)) if lines else 0


def delete_line(text: str, rng: random.Random) -> str:
    lines = _lines(text)
    if lines:
        del lines[_pick_line(lines, rng)]
    return "\n".join(lines)


def duplicate_line(text: str, rng: random.Random) -> str:
    lines = _lines(text)
    i = _pick_line(lines, rng)
    lines.insert(rng.randrange(len(lines) + 1), lines[i] if lines else "")
    return "\n".join(lines)


def swap_lines(text: str, rng: random.Random) -> str:
    lines = _lines(text)
    if len(lines) > 1:
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


def truncate(text: str, rng: random.Random) -> str:
    return text[: rng.randrange(len(text) + 1)]


def _replace_match(text: str, pattern: re.Pattern[str], rng: random.Random, new: str) -> str:
    found = list(pattern.finditer(text))
    if not found:
        return text
    m = rng.choice(found)
    return text[: m.start()] + new + text[m.end() :]


def change_number(text: str, rng: random.Random) -> str:
    found = list(_NUMBER.finditer(text))
    if not found:
        return text
    m = rng.choice(found)
    old = m.group()
    if rng.random() < 0.5 and old.lstrip("-").isdigit():
        new = str(int(old) + rng.choice((-1, 1, -8, 8, 1 << rng.randrange(1, 40))))
    else:
        new = rng.choice(INTERESTING_NUMBERS)
    return text[: m.start()] + new + text[m.end() :]


def change_opcode(text: str, rng: random.Random) -> str:
    found = list(_MNEMONIC.finditer(text))
    if not found:
        return text
    m = rng.choice(found)
    new = rng.choice((*sorted(OPCODES), "nop", "mvm.x", "MVM", "dma.t", ".core", ".input"))
    return text[: m.start(2)] + new + text[m.end(2) :]


def change_dtype(text: str, rng: random.Random) -> str:
    return _replace_match(text, _DTYPE, rng, rng.choice(DTYPE_CHOICES))


def change_space(text: str, rng: random.Random) -> str:
    return _replace_match(text, _SPACE, rng, rng.choice(SPACE_CHOICES))


def change_shape(text: str, rng: random.Random) -> str:
    return _replace_match(text, _SHAPE, rng, rng.choice(SHAPE_CHOICES))


def swap_tokens(text: str, rng: random.Random) -> str:
    """Swap two tokens of one line (operands, or a name and an address)."""
    lines = _lines(text)
    i = _pick_line(lines, rng)
    tokens = list(_TOKEN.finditer(lines[i])) if lines else []
    if len(tokens) < 2:
        return text
    a, b = sorted(rng.sample(tokens, 2), key=lambda m: m.start())
    line = lines[i]
    lines[i] = (
        line[: a.start()] + b.group() + line[a.end() : b.start()] + a.group() + line[b.end() :]
    )
    return "\n".join(lines)


def insert_junk(text: str, rng: random.Random) -> str:
    at = rng.randrange(len(text) + 1)
    return text[:at] + rng.choice(JUNK) + text[at:]


def delete_span(text: str, rng: random.Random) -> str:
    at = rng.randrange(len(text) + 1)
    return text[:at] + text[at + rng.randrange(1, 6) :]


def flip_byte(text: str, rng: random.Random) -> str:
    if not text:
        return text
    at = rng.randrange(len(text))
    return text[:at] + chr(rng.randrange(1, 128)) + text[at + 1 :]


def respace(text: str, rng: random.Random) -> str:
    """Remove the blanks of one line, or put tabs / extra blanks / CRLF in."""
    lines = _lines(text)
    i = _pick_line(lines, rng)
    if not lines:
        return text
    choice = rng.randrange(4)
    if choice == 0:
        lines[i] = lines[i].replace(" ", "")
    elif choice == 1:
        lines[i] = lines[i].replace(" ", "\t")
    elif choice == 2:
        lines[i] = re.sub(r"([,\[\]:])", r" \1 ", lines[i])
    else:
        lines[i] = lines[i] + "\r"
    return "\n".join(lines)


def foreign_line(text: str, rng: random.Random, donors: tuple[str, ...] = ()) -> str:
    """Insert a line from another program (a valid line in the wrong context)."""
    pool = [line for d in donors for line in _lines(d) if line.strip()]
    if not pool:
        return duplicate_line(text, rng)
    lines = _lines(text)
    lines.insert(rng.randrange(len(lines) + 1), rng.choice(pool))
    return "\n".join(lines)


Mutation = Callable[[str, random.Random], str]
MUTATIONS: tuple[Mutation, ...] = (
    delete_line, duplicate_line, swap_lines, truncate, change_number, change_number,
    change_number, change_opcode, change_dtype, change_space, change_shape, swap_tokens,
    insert_junk, delete_span, flip_byte, respace,
)  # fmt: skip


def mutate(text: str, rng: random.Random, donors: tuple[str, ...] = ()) -> str:
    """One to four random mutations of `text` (lines from `donors` may be spliced in)."""
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        if donors and rng.random() < 0.05:
            text = foreign_line(text, rng, donors)
        else:
            text = rng.choice(MUTATIONS)(text, rng)
    return text


_TOML_VALUE = re.compile(r"^(\s*[a-z_]+\s*=\s*)([^#\n]*?)(\s*(?:#.*)?)$", re.M)
TOML_VALUES = (
    "0", "-1", "1", "2", "3", "7", "1.5", "0.0", "-0.5", "1e-300", "1e300", "inf", "nan",
    "true", '"x"', "[]", "[1, 2]", "[2, 2]", "[0, 4]", "[4]", "{}", "1099511627776",
    "1125899906842624", "9223372036854775807", "65537", "1000000", "",
)  # fmt: skip


def mutate_toml(text: str, rng: random.Random) -> str:
    """Change one value of a preset, drop or duplicate a line, or add an unknown field."""
    choice = rng.randrange(10)
    if choice < 6:
        found = list(_TOML_VALUE.finditer(text))
        m = rng.choice(found)
        if m.group(1).strip().startswith("name"):
            return text  # keep the name: the program must still validate against it
        return text[: m.start(2)] + rng.choice(TOML_VALUES) + text[m.end(2) :]
    if choice == 6:
        return delete_line(text, rng)
    if choice == 7:
        return duplicate_line(text, rng)
    if choice == 8:
        lines = _lines(text)
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(("bogus = 1", "[extra]", "x")))
        return "\n".join(lines)
    return mutate(text, rng)
