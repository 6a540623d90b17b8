"""Greedy generation: prefill + decode programs in the interpreter, side by side with the
integer golden (bit-exact logits at every step) and the float model (token agreement).

    result = generate(progs, prompt=[1, 2, 3], max_new_tokens=8)
    result.bit_exact, result.tokens, result.float_agreement

Like Hugging Face's `generate`, N new tokens take one prefill and N-1 decode steps (the
last token is produced, never fed back). Each side runs its own greedy loop: the golden
picks its tokens from its own logits, so equal tokens are a result, not an assumption.
The float model is teacher-forced on the machine's tokens: its agreement rate is the share
of steps where its greedy token equals the integer model's on the same prefix.

A batch (`generate_batch`, prompts of any lengths) runs every sequence in the same program
runs; each sequence is checked against its own golden run, which knows nothing of the
others, so a cache or a row that leaks from one sequence into another is a mismatch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from cimc.backend.builder.compiled import Compiled
from cimc.decode.programs import DecoderPrograms, DecoderSession, batch_shape, check_ids
from cimc.decode.reference import PrefixReference
from cimc.errors import CimcError
from cimc.machine.dynamic import Dynamic
from cimc.machine.program import Program


@dataclass(frozen=True)
class Step:
    """One program run of one sequence: prefill (index 0) or a decode step."""

    index: int
    program: str  # "prefill", "decode" or "decode-warm" (weights kept in the macros)
    position: int  # position of the last row computed (its logits pick the token)
    token: int  # the interpreter's greedy token
    golden_token: int
    float_token: int | None
    mismatched: int  # logit codes differing from the golden's, over the rows computed
    window: int = 0  # cache slots the sequence's attention read in this run
    # masked layer -> share of the truly active neurons its predictor named (--sparsity
    # predict; the golden's count over the rows computed)
    predictor_recall: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class GenerateResult:
    prompt: tuple[int, ...]
    steps: tuple[Step, ...]

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


@dataclass(frozen=True)
class Run:
    """One program run of the batch: what ran (for its cost) and the windows it read."""

    index: int
    name: str
    windows: tuple[int, ...]
    compiled: Compiled
    program: Program
    # the run's record of data-dependent loads (what a sparse layer loaded): the cost
    # model prices the run from it (cimc/machine/dynamic.py)
    dynamic: Dynamic = field(default_factory=dict)


@dataclass(frozen=True)
class BatchResult:
    sequences: tuple[GenerateResult, ...]
    runs: tuple[Run, ...]

    @property
    def bit_exact(self) -> bool:
        return all(r.bit_exact for r in self.sequences)


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
    """One sequence (the programs of a batch of one)."""
    return generate_batch(progs, [prompt], max_new_tokens, with_float, on_step).sequences[0]


def generate_batch(
    progs: DecoderPrograms,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    with_float: bool = True,
    on_step: Callable[[Step], None] | None = None,
) -> BatchResult:
    """Every sequence of the batch generated together (one program run per step for all
    of them), each checked against its own golden and float references."""
    dm = progs.model
    mine = [[int(t) for t in prompt] for prompt in prompts]
    _check_prompts(progs, mine, max_new_tokens)
    session = DecoderSession(progs)
    golden = PrefixReference(dm, "golden")
    flt = PrefixReference(dm, "float") if with_float else None
    theirs = [list(m) for m in mine]
    steps: list[list[Step]] = [[] for _ in mine]
    runs: list[Run] = []
    kept: tuple[tuple[int, int], ...] | None = None
    for index in range(max_new_tokens):
        run, kept = _next_run(progs, index, mine, kept)
        ids = [t for m in mine for t in m] if index == 0 else [m[-1] for m in mine]
        positions = _positions(mine, index)
        got = session.run_rows(run.compiled, ids, positions, run.program)
        if session.last is not None and session.last.dynamic:
            run = replace(run, dynamic=session.last.dynamic)
        shape = batch_shape(run.compiled.graph)
        for s, (r0, rows) in enumerate(zip(shape.starts(), shape.segments, strict=True)):
            first = len(mine[s]) - rows
            step = _check_rows(
                run, s, got[r0 : r0 + rows], golden.rows(theirs[s], first), flt, mine[s]
            )
            if golden.last_recall:
                step = replace(step, predictor_recall=recalls(golden.last_recall))
            steps[s].append(step)
            if on_step is not None:
                on_step(step)
        runs.append(run)
        for s, seq in enumerate(steps):
            mine[s].append(seq[-1].token)
            theirs[s].append(seq[-1].golden_token)
    results = tuple(
        GenerateResult(tuple(int(t) for t in p), tuple(seq))
        for p, seq in zip(prompts, steps, strict=True)
    )
    return BatchResult(results, tuple(runs))


def recalls(counts: dict[str, tuple[int, int]]) -> dict[str, float]:
    """hits / active per layer (1.0 when nothing was active)."""
    return {name: hits / total if total else 1.0 for name, (hits, total) in counts.items()}


def _check_prompts(progs: DecoderPrograms, prompts: list[list[int]], new: int) -> None:
    dm, lens = progs.model, progs.prompt_lens
    for prompt in prompts:
        check_ids(prompt, dm.vocab)
    got = tuple(len(p) for p in prompts)
    if got != lens:
        what = f"{lens[0]} prompt tokens" if len(lens) == 1 else f"prompts of {list(lens)} tokens"
        have = str(got[0]) if len(got) == 1 else str(list(got))
        raise CimcError(f"the prefill program takes {what}, got {have}", "decode")
    longest = max(lens)
    if new < 1 or longest + new - 1 > dm.capacity:
        raise CimcError(
            f"{new} new tokens after {longest} need {longest + new - 1} positions; "
            f"the programs hold {dm.capacity} (raise --max-positions)",
            "--max-new-tokens",
        )


def _positions(tokens: list[list[int]], index: int) -> list[int]:
    if index == 0:
        return [p for m in tokens for p in range(len(m))]
    return [len(m) - 1 for m in tokens]


def _next_run(
    progs: DecoderPrograms,
    index: int,
    tokens: list[list[int]],
    kept: tuple[tuple[int, int], ...] | None,
) -> tuple[Run, tuple[tuple[int, int], ...] | None]:
    """The program of step `index`; the warm form when the macros it keeps are the ones
    the previous run handed back (`kept`)."""
    if index == 0:
        pre = progs.prefill
        return Run(0, "prefill", batch_shape(pre.graph).windows, pre, pre.program), None
    variant = progs.decode_variant(_positions(tokens, index))
    compiled, warm = variant.compiled, variant.warm
    windows = batch_shape(compiled.graph).windows
    if warm is None:
        return Run(index, "decode", windows, compiled, compiled.program), None
    if kept == warm.kept:
        return Run(index, "decode-warm", windows, compiled, warm.warm), warm.kept
    return Run(index, "decode", windows, compiled, warm.cold), warm.kept


def _check_rows(
    run: Run,
    seq: int,
    got: np.ndarray,
    want: np.ndarray,
    flt: PrefixReference | None,
    tokens: list[int],
) -> Step:
    bad = int(np.count_nonzero(got != want)) if got.shape == want.shape else got.size
    ftok = greedy(flt.rows(tokens, len(tokens) - 1)[-1]) if flt is not None else None
    position = len(tokens) - 1
    tok, gold = greedy(got[-1]), greedy(want[-1])
    return Step(run.index, run.name, position, tok, gold, ftok, bad, run.windows[seq])
