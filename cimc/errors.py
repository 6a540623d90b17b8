"""The one error type users see: a message with a location, printed on one line."""

from __future__ import annotations


class CimcError(Exception):
    """A user-facing error: bad input, unsupported model, malformed program.

    `location` names the place (``file:line:col``, a graph node, an arch field...).
    The CLI prints ``location: message`` on one line and exits with `exit_code`.
    """

    exit_code = 2

    def __init__(self, message: str, location: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class VerificationMismatch(CimcError):
    """The compiled program disagrees with the integer golden (exit 1, not a usage error)."""

    exit_code = 1


class InternalError(Exception):
    """A bug in cimc met while handling a located piece of input (not the user's fault).

    Deliberately not a `CimcError`: callers that expect bad-input errors do not swallow it.
    The CLI prints it on one line and exits with `exit_code`; the cause stays chained.
    """

    exit_code = 3

    def __init__(self, message: str, location: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location

    def __str__(self) -> str:
        text = f"internal error, a cimc bug (please report it with the model): {self.message}"
        return f"{self.location}: {text}" if self.location else text
