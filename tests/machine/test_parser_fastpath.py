"""The fast line parser builds exactly Lark's tree (tokens, types, positions) or declines."""

from __future__ import annotations

import time
from pathlib import Path

import lark
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cimc.machine.fastparse import fast_tree
from cimc.machine.parser import grammar, parse_program
from cimc.machine.printer import print_program
from tests.machine.strategies import programs
from tests.machine.test_printer import CANONICAL

MALFORMED = sorted((Path(__file__).parent / "malformed").glob("*.cimasm"))


def _same(fast: lark.Tree | lark.Token, slow: lark.Tree | lark.Token, path: str = "") -> None:
    assert type(fast) is type(slow), path
    if isinstance(fast, lark.Token):
        assert isinstance(slow, lark.Token)
        got = (fast.type, str(fast), fast.line, fast.column)
        assert got == (slow.type, str(slow), slow.line, slow.column), path
        return
    assert isinstance(slow, lark.Tree)
    assert fast.data == slow.data, path
    if fast.data != "start":
        assert (fast.meta.line, fast.meta.column) == (slow.meta.line, slow.meta.column), path
    assert len(fast.children) == len(slow.children), path
    for i, (a, b) in enumerate(zip(fast.children, slow.children, strict=True)):
        _same(a, b, f"{path}/{fast.data}[{i}]")


def _agree(text: str) -> bool:
    """Check agreement; True when the fast path accepted the text."""
    text = text if text.endswith("\n") else text + "\n"
    fast = fast_tree(text)
    if fast is None:
        return False
    _same(fast, grammar().parse(text))  # Lark must accept what the fast path accepts
    return True


def test_canonical_and_corpus_agree() -> None:
    assert _agree(CANONICAL)
    accepted = [_agree(p.read_text()) for p in MALFORMED]
    # Only the two syntax-error files fall back to Lark.
    assert accepted.count(False) == 2


@pytest.mark.parametrize(
    "line",
    [
        "  add sp[ 0x0 ] : i8 [2x3] ,sp[0]:i8[2x3],-5;x",
        "  dma dram[ x + 0x10 ]:i8[1x1], sp[0]:i8[1x1]",
        "  mload.t m1[ 0 : 4 , 8:12 ], sp[0x0]:i8[4x4/9]",
        "  halt;done",
        "barrier",
        "  send +1, sp[0]:i8[1x1], 0x10",
        ".const a.b flash[0x0]i8[1x1];c",
        ".region r gb[0] 64",
        "\t.core 0x1 ; c",
    ],
)
def test_unusual_but_valid_lines_agree(line: str) -> None:
    assert _agree(".arch tiny\n.core 0\n" + line)


@pytest.mark.parametrize(
    "line",
    ["  add-5", "  addsp[0]:i8[1x1]", "  add 5x", "  fill sp[0]:i8[1x1],", ".archtiny", "ADD 1"],
)
def test_lines_the_fast_path_declines(line: str) -> None:
    assert fast_tree(f".arch tiny\n.core 0\n{line}\n") is None


_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(programs())
def test_generated_programs_agree(program) -> None:  # type: ignore[no-untyped-def]
    assert _agree(print_program(program))


_NOISE = st.sampled_from(list(" \t,;:[]+-x0a9.m/_\n"))


@_SETTINGS
@given(programs(), st.data())
def test_mutated_programs_agree_or_fall_back(program, data) -> None:  # type: ignore[no-untyped-def]
    text = print_program(program)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text) - 1))
        if data.draw(st.booleans()):
            text = text[:at] + text[at + 1 :]
        else:
            text = text[:at] + data.draw(_NOISE) + text[at:]
    try:
        _agree(text)
    except lark.UnexpectedInput as e:
        raise AssertionError(f"fast path accepted text Lark rejects: {e}") from None


def _best_of_3(fn: object, text: str) -> float:
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fn(text)  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def test_fast_path_is_much_faster() -> None:
    body = "  add sp[0x40]:i8[4x8], sp[0x0]:i8[4x8], 1                  ; /node\n" * 1000
    text = f".arch tiny\n.core 0\n{body}  halt\n"
    assert len(parse_program(text).instrs(0)) == 1001
    fast, slow = _best_of_3(fast_tree, text), _best_of_3(grammar().parse, text)
    assert fast < slow / 2, (fast, slow)
