"""Batched decode: B sequences of different prompt lengths in one program run per step,
each with its own KV cache, bit-exact against its own golden run; decode attention over
the filled positions (windows), not the whole capacity."""

from __future__ import annotations

import numpy as np
import pytest

from cimc.decode.generate import generate, generate_batch
from cimc.decode.programs import DecoderSession, batch_shape, build_decoder, load_decoder
from cimc.decode.report import token_cost
from cimc.decode.specialize import BatchShape, specialize
from cimc.decode.variants import window
from cimc.errors import CimcError
from tests.decode.decode_helpers import arch, zoo_export

PROMPTS = [[3, 17, 99], [5], [7, 8, 9, 10, 11], [40, 41]]
CAPACITY = 12
BLOCK = 4


@pytest.fixture(scope="module")
def gpt2_batch():  # type: ignore[no-untyped-def]
    dm = load_decoder(zoo_export("gpt2"), CAPACITY)
    lens = [len(p) for p in PROMPTS]
    return build_decoder(None, arch("tiny"), lens, CAPACITY, loaded=dm, block=BLOCK)


def test_four_prompts_bit_exact_every_sequence_every_step(gpt2_batch) -> None:  # type: ignore[no-untyped-def]
    result = generate_batch(gpt2_batch, PROMPTS, 6, with_float=False)
    assert result.bit_exact
    for prompt, seq in zip(PROMPTS, result.sequences, strict=True):
        assert seq.prompt == tuple(prompt) and len(seq.steps) == 6
        assert [s.mismatched for s in seq.steps] == [0] * 6
        assert seq.tokens == seq.golden_tokens
        assert [s.position for s in seq.steps] == list(range(len(prompt) - 1, len(prompt) + 5))
        assert [s.window for s in seq.steps] == [
            window(s.position, BLOCK, CAPACITY) for s in seq.steps
        ]
    # one run per step for the whole batch, the windows growing with the positions
    assert [r.name for r in result.runs] == ["prefill"] + ["decode"] * 5
    assert result.runs[1].windows == (4, 4, 8, 4) and result.runs[-1].windows == (8, 8, 12, 8)


def test_batch_tokens_equal_single_sequence_runs(gpt2_batch) -> None:  # type: ignore[no-untyped-def]
    """The same tokens as each prompt generated alone (a leak between the sequences'
    caches or rows would change them: the prompts differ)."""
    batch = generate_batch(gpt2_batch, PROMPTS, 4, with_float=False)
    dm = gpt2_batch.model
    for prompt, seq in zip(PROMPTS, batch.sequences, strict=True):
        alone = build_decoder(None, arch("tiny"), len(prompt), CAPACITY, loaded=dm, block=0)
        single = generate(alone, prompt, 4, with_float=False)
        assert single.bit_exact and single.tokens == seq.tokens
    assert len({seq.tokens for seq in batch.sequences}) > 1


def test_weights_loaded_once_per_step_for_the_batch(gpt2_batch) -> None:  # type: ignore[no-untyped-def]
    dm = gpt2_batch.model
    one = build_decoder(None, arch("tiny"), 3, CAPACITY, loaded=dm, block=0)
    single = token_cost(one.decode, "decode", 1)
    batched = token_cost(gpt2_batch.decode, "decode", 4)
    assert single.weight_bytes_loaded == batched.weight_bytes_loaded > 0
    assert batched.weight_bytes_per_token == single.weight_bytes_per_token / 4
    assert batched.weight_bytes_per_token <= 0.30 * single.weight_bytes_per_token
    assert batched.tokens_per_second > 2 * single.tokens_per_second


def test_one_kv_cache_per_sequence(gpt2_batch) -> None:  # type: ignore[no-untyped-def]
    states = gpt2_batch.decode.program.decls_of("state")
    heads = 4
    assert len(states) == 2 and all(d.rows == 4 * heads * CAPACITY for d in states)
    pre = [(d.name, d.dtype, d.rows, d.cols) for d in gpt2_batch.prefill.program.decls_of("state")]
    assert pre == [(d.name, d.dtype, d.rows, d.cols) for d in states]
    shape = batch_shape(gpt2_batch.prefill.graph)
    assert shape.segments == (3, 1, 5, 2) and shape.windows == (4, 4, 8, 4)


def test_attention_cost_follows_the_window(gpt2_batch) -> None:  # type: ignore[no-untyped-def]
    small = gpt2_batch.decode_variant([3, 0, 3, 1])
    large = gpt2_batch.decode_variant([11, 11, 11, 11])
    assert batch_shape(small.compiled.graph).windows == (4,) * 4
    assert large.compiled is gpt2_batch.decode  # the whole capacity: the decode program
    c_small = token_cost(small.compiled, "decode", 4)
    c_large = token_cost(large.compiled, "decode", 4)
    assert c_small.macs < c_large.macs and c_small.cycles < c_large.cycles
    assert c_small.weight_bytes_loaded == c_large.weight_bytes_loaded


def test_positions_beyond_the_window_are_refused(gpt2_batch) -> None:  # type: ignore[no-untyped-def]
    small = gpt2_batch.decode_variant([0, 0, 0, 0])
    session = DecoderSession(gpt2_batch)
    with pytest.raises(
        CimcError, match=r"position 5 of sequence 2 is beyond the program's attention window of 4"
    ):
        session.run_rows(small.compiled, [1, 2, 3, 4], [0, 1, 5, 2])
    with pytest.raises(
        CimcError, match=r"the prefill program takes prompts of \[3, 1, 5, 2\] tokens"
    ):
        generate_batch(gpt2_batch, [[1], [2]], 2)


def test_batch_shapes_are_checked() -> None:
    dm = load_decoder(zoo_export("gpt2"), 6)
    with pytest.raises(CimcError, match=r"segments \[2, 2\] are not 3 rows"):
        specialize(dm.qgraph, dm.axes, 3, BatchShape((2, 2), (6, 6)))
    with pytest.raises(CimcError, match=r"4 rows in a window of 2 slots do not fit"):
        specialize(dm.qgraph, dm.axes, 5, BatchShape((4, 1), (2, 6)))
    with pytest.raises(CimcError, match=r"leaves no room to decode"):
        build_decoder(None, arch("tiny"), [2, 6], 6, loaded=dm)


def test_llama_batch_keeps_weights_across_windows() -> None:
    """GQA + RoPE, weights kept in the macros: the warm programs of every window share the
    kept macros, so a window change keeps running warm, bit-exact."""
    progs = build_decoder(zoo_export("llama"), arch("default"), [2, 4], 9, block=4)
    result = generate_batch(progs, [[5, 6], [1, 2, 3, 4]], 5, with_float=False)
    assert result.bit_exact
    names = [r.name for r in result.runs]
    assert names == ["prefill", "decode", "decode-warm", "decode-warm", "decode-warm"]
    assert len({r.windows for r in result.runs[1:]}) > 1
    first, last = (token_cost(r.compiled, r.name, 2, r.program) for r in result.runs[1::3])
    assert last.weight_bytes_loaded == 0 < first.weight_bytes_loaded
    assert np.isfinite(last.tokens_per_second) and last.tokens_per_second > 0


def test_mapping_duplicate_prefill_and_auto_decode_are_bit_exact() -> None:
    """`--mapping duplicate` in generate: prefill gets copies (its rows split between them),
    the one-row-per-sequence decode programs take auto; every step stays bit-exact."""
    from cimc.inspect.mapping import program_mapping
    from cimc.pipeline import PipelineOptions

    dm = load_decoder(zoo_export("gpt2"), CAPACITY)
    lens = [len(p) for p in PROMPTS]
    options = PipelineOptions(mapping="duplicate")
    progs = build_decoder(None, arch("default"), lens, CAPACITY, options, loaded=dm, block=0)
    assert program_mapping(progs.prefill.program).mapping == "duplicate"
    assert progs.prefill.stream is not None and progs.prefill.stream.copies
    result = generate_batch(progs, PROMPTS, 3, with_float=False)
    assert result.bit_exact
