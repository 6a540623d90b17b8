"""Every `cimc` command's --help shows what it does and at least one example."""

from __future__ import annotations

import importlib
from pathlib import Path

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


def bundled_help_examples() -> list[list[str]]:
    """Help example lines whose program is a bundled example named without a path."""
    from cimc.commands.program_files import bundled_examples

    names, lines = set(bundled_examples()), []
    parser = build_parser()
    texts = [parser.format_help()] + [
        action.choices[name].format_help()
        for action in parser._subparsers._group_actions  # type: ignore[union-attr]
        for name in COMMANDS
    ]
    for text in texts:
        for line in text.splitlines():
            words = line.split("#")[0].split(">")[0].split()
            if len(words) > 2 and words[0] == "cimc" and words[2] in names:
                lines.append(words[1:])
    return lines


def test_help_examples_run_without_a_checkout(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """From any folder (as from an installed wheel), the bundled examples named in --help
    are found by name, inputs included."""
    monkeypatch.chdir(tmp_path)
    examples = bundled_help_examples()
    assert {argv[0] for argv in examples} >= {"run", "report", "inspect"}
    for argv in examples:
        assert main([*argv, "-q"]) == 0, argv
