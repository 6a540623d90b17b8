"""Every `cimc` command's --help shows what it does and at least one example."""

from __future__ import annotations

import importlib

import pytest

from cimc.cli import COMMANDS, build_parser, main


@pytest.mark.parametrize("name", COMMANDS)
def test_help_has_an_example_of_the_command(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    module = importlib.import_module(f"cimc.commands.{name}")
    assert module.HELP in text
    assert "example" in text
    examples = [line.strip() for line in text.splitlines() if line.strip().startswith("cimc ")]
    assert any(line.startswith(f"cimc {name} ") for line in examples), text


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for name in COMMANDS:
        assert f"    {name}" in text
    assert "examples:" in text
