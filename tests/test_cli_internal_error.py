"""An unexpected exception in any command is one line naming the place, exit 3, no traceback."""

from __future__ import annotations

import argparse

import pytest

from cimc import cli


class _CrashingParser:
    """Stands in for the real parser: whatever the command, its handler hits a bug."""

    def parse_args(self, argv: object) -> argparse.Namespace:
        def boom(args: argparse.Namespace) -> int:
            raise KeyError("no such tile")

        return argparse.Namespace(handler=boom, quiet=True)


def test_unexpected_exception_is_one_located_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "build_parser", _CrashingParser)
    monkeypatch.delenv("CIMC_TRACEBACK", raising=False)
    code = cli.main(["inspect", "x.cimasm"])
    err = capsys.readouterr().err
    assert code == 3
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "KeyError: 'no such tile'" in err
    assert "(at cli.py:" in err  # the deepest frame inside the cimc package is named
    assert "CIMC_TRACEBACK=1" in err


def test_traceback_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "build_parser", _CrashingParser)
    monkeypatch.setenv("CIMC_TRACEBACK", "1")
    with pytest.raises(KeyError):
        cli.main(["inspect", "x.cimasm"])
