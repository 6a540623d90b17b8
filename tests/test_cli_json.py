"""One CLI vocabulary: every command has --json, -q and its exit codes in --help, and the
JSON of all of them follows the key rules of cimc/commands/json_output.py."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from cimc import __version__
from cimc.cli import COMMANDS, main
from cimc.commands.json_output import ALIASES, DATA_MAPS
from tests.decode.decode_helpers import tiny_export

KEY = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
UNITS = (
    "_cycles", "_cycle", "_bytes", "_uj", "_pj", "_us", "_mhz", "_gbps", "_mm2", "_mw", "_seconds"
)  # fmt: skip


@pytest.mark.parametrize("name", COMMANDS)
def test_help_lists_json_quiet_and_exit_codes(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([name, "--help"])
    text = capsys.readouterr().out
    assert "--json" in text and "-q, --quiet" in text, name
    assert "exit status: 0 " in text and "2 bad input" in text, name


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The --json output of every command, on one small model (and a decoder for generate)."""
    d = tmp_path_factory.mktemp("json")
    out: dict[str, Any] = {}

    def call(*argv: str) -> Any:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            code = main([*argv, "--json", "-q"])
        assert code == 0, (argv, buffer.getvalue()[-2000:])
        return json.loads(buffer.getvalue())

    out["example"] = call("example", "bert-tiny", "-o", str(d), "--exporter", "legacy")
    model = out["example"]["written"][0]
    program = str(d / "bert.cimasm")
    model_args = (model, "--arch", "tiny", "--seq-len", "4")
    out["compile"] = call("compile", *model_args, "-o", program)
    out["opt"] = call("opt", model, "--seq-len", "4", "-p", "canonicalize")
    out["verify"] = call("verify", *model_args)
    out["run"] = call("run", program, "--seed", "3")
    out["report"] = call("report", program)
    out["inspect"] = call("inspect", program)
    decoder = d / "tiny.pt2"
    torch.export.save(tiny_export(), str(decoder))
    gen = ("--prompt-ids", "4,9", "--max-new-tokens", "2", "--arch", "tiny")
    out["generate"] = call("generate", str(decoder), *gen)
    space = d / "space.toml"
    space.write_text('base = "tiny"\n[compile]\nseq_len = 4\n[knobs]\n"core.macros" = [2, 0]\n')
    out["sweep"] = call("sweep", model, "--space", str(space), "-o", str(d / "sweep"), "--verify")
    return out


def walk(value: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(path, key, value) of every vocabulary key (data-map keys skipped, values walked)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield path, key, item
            if key in DATA_MAPS and isinstance(item, dict):
                for name, inner in item.items():
                    yield from walk(inner, f"{path}.{key}[{name}]")
            else:
                yield from walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            yield from walk(item, f"{path}[]")


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def test_every_command_prints_json(documents: dict[str, Any]) -> None:
    assert sorted(documents) == sorted(COMMANDS)
    for name, doc in documents.items():
        assert list(doc)[:2] == ["command", "cimc_version"], name
        assert doc["command"] == name and doc["cimc_version"] == __version__


def test_keys_follow_the_rules(documents: dict[str, Any]) -> None:
    bad = []
    for name, doc in documents.items():
        for path, key, value in walk(doc):
            where = f"{name}{path}.{key}"
            if not KEY.fullmatch(key):
                bad.append(f"{where}: not snake_case")
            if key in ALIASES:
                bad.append(f"{where}: write {ALIASES[key]}")
            if key.endswith(UNITS) and not _numbers(value):
                bad.append(f"{where}: a unit-suffixed key holds {value!r}")
    assert bad == []


def _numbers(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_numbers(v) for v in value.values())
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def test_a_key_has_one_type_in_every_command(documents: dict[str, Any]) -> None:
    types: dict[str, set[str]] = defaultdict(set)
    seen: dict[str, set[str]] = defaultdict(set)
    for name, doc in documents.items():
        for _, key, value in walk(doc):
            if value is not None:
                types[key].add(json_type(value))
                seen[key].add(name)
    mixed = {k: sorted(t) for k, t in types.items() if len(t) > 1}
    assert mixed == {}
    # the shared figures are spelled the same where they appear
    assert {"verify", "report"} <= seen["makespan_cycles"] and "generate" in seen["energy_uj"]
    assert {"verify", "report"} <= seen["macro_cell_utilization"]


def test_the_type_check_can_fail() -> None:
    docs = {"a": {"energy_uj": 1.0}, "b": {"energy_uj": {"mac": 1.0}}}
    kinds = {json_type(v) for doc in docs.values() for _, k, v in walk(doc) if k == "energy_uj"}
    assert kinds == {"number", "dict"}


def test_run_json_is_dequantized_in_graph_shapes(documents: dict[str, Any]) -> None:
    run, verify = documents["run"], documents["verify"]
    assert run["dequantized"] is True
    (output,) = run["outputs"].values()
    assert output["dtype"] == "float32"
    assert output["shape"] == verify["outputs"]["output"]["shape"] == [1, 4, 64]


def test_written_paths_exist(documents: dict[str, Any]) -> None:
    compiled = documents["compile"]
    assert Path(compiled["program"]).is_file() and Path(compiled["constants"]).is_file()
    opt = documents["opt"]
    assert opt["ir"].startswith("graph @") and opt["output"] is None
    assert [p["name"] for p in opt["passes"]] == ["canonicalize"]
