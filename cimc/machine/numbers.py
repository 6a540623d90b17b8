"""Integer tokens of the assembly: decimal (leading zeros allowed) or 0x hex, maybe signed.

Python's int() refuses more than 4300 digits with a ValueError; no address or immediate needs
more than 40, so longer numbers are refused first, as a `LongNumber` naming the token (the
parser turns it into a located error).
"""

from __future__ import annotations

MAX_DIGITS = 40  # far beyond int64


class LongNumber(Exception):
    """A number with more digits than any address or immediate can have (`token` says where)."""

    def __init__(self, token: object) -> None:
        super().__init__(str(token))
        self.token = token


def digits(text: str, base: int, token: object) -> int:
    """`text` (digits only) in `base`; `token` is reported if it is too long."""
    if len(text) > MAX_DIGITS:
        raise LongNumber(token)
    return int(text, base)


def grammar_int(token: object) -> int:
    """A grammar integer (INT or SIGNED_INT token): decimal or 0x hex, maybe signed."""
    text = str(token)
    body = text.lstrip("+-")
    hexa = body.startswith("0x")
    value = digits(body[2:], 16, token) if hexa else digits(body, 10, token)
    return -value if text.startswith("-") else value
