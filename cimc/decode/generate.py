"""Greedy generation: prefill + decode programs in the interpreter, side by side with the
integer golden (bit-exact logits at every step) and the float model (token agreement).

    result = generate(progs, prompt=[1, 2, 3], max_new_tokens=8)
    result.bit_exact, result.tokens, result.float_agreement

Like Hugging Face's `generate`, N new tokens take one prefill and N-1 decode steps (the
last token is produced, never fed back). Each side runs its own greedy loop: the golden
picks its tokens from its own logits, so equal tokens are a result, not an assumption.
The float model is teacher-forced on the machine's tokens: its agreement rate is the share
of steps where its greedy token equals the integer model's on the same prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cimc.decode.programs import DecoderPrograms, DecoderSession, check_ids
from cimc.decode.reference import PrefixReference
from cimc.errors import CimcError
from cimc.machine.dynamic import Dynamic


@dataclass(frozen=True)
class Step:
    """One program run: prefill (index 0) or a decode step."""

    index: int
    program: str  # "prefill", "decode" or "decode-warm" (weights kept in the macros)
    position: int  # position of the last row computed (its logits pick the token)
    token: int  # the interpreter's greedy token
    golden_token: int
    float_token: int | None
    mismatched: int  # logit codes differing from the golden's, over the rows computed


@dataclass(frozen=True)
class GenerateResult:
    prompt: tuple[int, ...]
    steps: tuple[Step, ...]
    # per step, the run's record of data-dependent loads (what a sparse layer loaded):
    # the cost model prices each step from it (cimc/machine/dynamic.py)
    runs: tuple[Dynamic, ...] = ()

    @property
    def tokens(self) -> tuple[int, ...]:
        return tuple(s.token for s in self.steps)

    @property
    def golden_tokens(self) -> tuple[int, ...]:
        return tuple(s.golden_token for s in self.steps)

    @property
    def bit_exact(self) -> bool:
        return all(s.mismatched == 0 for s in self.steps) and self.tokens == self.golden_tokens

    @property
    def float_agreement(self) -> float | None:
        pairs = [(s.token, s.float_token) for s in self.steps if s.float_token is not None]
        return sum(a == b for a, b in pairs) / len(pairs) if pairs else None


def _program_name(progs: DecoderPrograms, index: int) -> str:
    if index == 0:
        return "prefill"
    return "decode-warm" if progs.warm is not None and index > 1 else "decode"


def greedy(logits: np.ndarray) -> int:
    """The first index of the largest logit (codes and dequantized values agree)."""
    return int(np.argmax(logits))


def generate(
    progs: DecoderPrograms,
    prompt: Sequence[int],
    max_new_tokens: int,
    with_float: bool = True,
    on_step: Callable[[Step], None] | None = None,
) -> GenerateResult:
    dm = progs.model
    prompt = [int(t) for t in prompt]
    check_ids(prompt, dm.vocab)
    p = progs.prefill.graph.node(dm.token_input).type.shape[1]
    if len(prompt) != p:
        raise CimcError(f"the prefill program takes {p} prompt tokens, got {len(prompt)}", "decode")
    if max_new_tokens < 1 or p + max_new_tokens - 1 > dm.capacity:
        raise CimcError(
            f"{max_new_tokens} new tokens after {p} need {p + max_new_tokens - 1} positions; "
            f"the programs hold {dm.capacity} (raise --max-positions)",
            "--max-new-tokens",
        )
    session = DecoderSession(progs)
    golden = PrefixReference(dm, "golden")
    flt = PrefixReference(dm, "float") if with_float else None
    mine, theirs = list(prompt), list(prompt)
    steps: list[Step] = []
    runs: list[Dynamic] = []
    for index in range(max_new_tokens):
        first = 0 if index == 0 else len(mine) - 1
        compiled = progs.prefill if index == 0 else progs.decode
        program = compiled.program if index == 0 else progs.decode_program(index)
        got = session.run(compiled, mine[first:], first, program)
        runs.append(session.last.dynamic if session.last is not None else {})
        want = golden.rows(theirs, first)
        bad = int(np.count_nonzero(got != want)) if got.shape == want.shape else got.size
        ftok = greedy(flt.rows(mine, len(mine) - 1)[-1]) if flt is not None else None
        step = Step(
            index,
            _program_name(progs, index),
            len(mine) - 1,
            greedy(got[-1]),
            greedy(want[-1]),
            ftok,
            bad,
        )
        steps.append(step)
        if on_step is not None:
            on_step(step)
        mine.append(step.token)
        theirs.append(step.golden_token)
    return GenerateResult(tuple(prompt), tuple(steps), tuple(runs))
