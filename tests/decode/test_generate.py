"""Prefill + decode programs with a KV cache, bit-exact against the integer golden run on
the whole prefix without any cache (fast variants: one layer, short prompts)."""

from __future__ import annotations

import numpy as np
import pytest

from cimc.decode.generate import generate
from cimc.decode.programs import DecoderSession, build_decoder, step_inputs
from cimc.decode.reference import PrefixReference
from cimc.decode.report import token_cost
from cimc.errors import CimcError
from cimc.machine.interpreter import run_program
from cimc.verify import located_program, weight_bytes_loaded
from tests.decode.decode_helpers import arch, tiny_export, zoo_export

PROMPT = [3, 17, 99]


@pytest.fixture(scope="module")
def gpt2():  # type: ignore[no-untyped-def]
    return build_decoder(zoo_export("gpt2"), arch("tiny"), len(PROMPT), 7)


def test_gpt2_generate_is_bit_exact_every_step(gpt2) -> None:  # type: ignore[no-untyped-def]
    result = generate(gpt2, PROMPT, 4)
    names = [s.program for s in result.steps]
    assert names[:2] == ["prefill", "decode"] and set(names[2:]) <= {"decode", "decode-warm"}
    assert [s.position for s in result.steps] == [2, 3, 4, 5]
    assert all(s.mismatched == 0 for s in result.steps)
    assert result.bit_exact and result.tokens == result.golden_tokens
    assert result.float_agreement is not None and 0.0 <= result.float_agreement <= 1.0


def test_programs_share_constants_and_cache_layout(gpt2) -> None:  # type: ignore[no-untyped-def]
    pre, dec = gpt2.prefill, gpt2.decode
    shared = set(pre.consts) & set(dec.consts)
    size = {name: value.nbytes for name, value in gpt2.consts.items()}
    biggest = max(size, key=lambda n: size[n])  # the weights (image)
    assert biggest in shared and sum(size[n] for n in shared) > 0.9 * sum(size.values())
    assert set(gpt2.consts) == set(pre.consts) | set(dec.consts)
    states = [(d.name, d.dtype, d.rows, d.cols) for d in dec.program.decls_of("state")]
    assert states == [(d.name, d.dtype, d.rows, d.cols) for d in pre.program.decls_of("state")]
    assert len(states) == 2 and all(rows == 4 * 7 for _, _, rows, _ in states)  # 4 heads x C
    assert any(i.opcode == "scatter" for s in dec.program.cores for i in s.instrs)


def test_the_cache_carries_the_prompt(gpt2) -> None:  # type: ignore[no-untyped-def]
    """Decoding from an empty cache (or at the wrong position) gives other logits: the
    golden agreement above depends on what prefill appended and where."""
    golden = PrefixReference(gpt2.model, "golden")
    session = DecoderSession(gpt2)
    logits = session.run(gpt2.prefill, PROMPT, 0)
    np.testing.assert_array_equal(logits, golden.rows(PROMPT, 0))
    tokens = [*PROMPT, 5]
    want = golden.rows(tokens, 3)
    kept = dict(session.state)
    np.testing.assert_array_equal(session.run(gpt2.decode, [5], 3), want)
    assert not np.array_equal(DecoderSession(gpt2).run(gpt2.decode, [5], 3), want)
    assert not np.array_equal(DecoderSession(gpt2, dict(kept)).run(gpt2.decode, [5], 4), want)


def test_positions_and_ids_are_checked(gpt2) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CimcError, match=r"positions 7..7 are beyond the compiled capacity of 7"):
        DecoderSession(gpt2).run(gpt2.decode, [1], 7)
    with pytest.raises(CimcError, match=r"--prompt-ids: token id 512 is outside the vocabulary"):
        generate(gpt2, [1, 512, 2], 2)
    with pytest.raises(CimcError, match=r"need 9 positions; the programs hold 7"):
        generate(gpt2, PROMPT, 7)
    # Bypassing the host check, the machine itself refuses a position beyond the cache.
    compiled = gpt2.decode
    feeds = step_inputs(gpt2.model, [1], 6)
    feeds["cache_position"] = np.array([[7]])
    from cimc.backend.builder.compiled import program_inputs

    program = located_program(compiled)
    with pytest.raises(
        CimcError, match=r"decode.cimasm:[1-9]\d*:3: core 0: gather: index 7 in row"
    ):
        run_program(program, compiled.arch, program_inputs(compiled, feeds), gpt2.consts)


def test_decode_costs_less_than_prefill(gpt2) -> None:  # type: ignore[no-untyped-def]
    pre, dec = token_cost(gpt2.prefill, "prefill", 3), token_cost(gpt2.decode, "decode", 1)
    assert dec.macs * 3 < pre.macs * 1.5  # one row instead of three (attention over C)
    assert dec.weight_bytes_loaded == pre.weight_bytes_loaded == dec.weight_bytes > 0
    assert dec.memory_bound and dec.ops_per_byte < dec.ridge_ops_per_byte
    assert 0 <= dec.hidden_load_cycles <= dec.load_cycles <= dec.cycles
    assert dec.cycles >= dec.streaming_bound_cycles and dec.bound_ratio >= 1.0


def test_llama_gqa_rope_with_weights_kept_between_tokens() -> None:
    """On `default` every weight fits: steps after the first load none (decode-warm), the
    macros carried by `.persist`; still bit-exact, and impossible without the carried cells."""
    progs = build_decoder(zoo_export("llama"), arch("default"), 3, 6, streaming="sequential")
    assert any(n.op.NAME == "decode.rotary" for n in progs.decode.graph.nodes())
    assert progs.warm is not None and progs.warm.kept
    assert progs.warm.skipped_load_bytes == weight_bytes_loaded(progs.decode.program) > 0
    assert weight_bytes_loaded(progs.warm.warm) == 0
    warm_cost = token_cost(progs.decode, "warm", 1, progs.warm.warm)
    cold_cost = token_cost(progs.decode, "cold", 1)
    assert warm_cost.cycles < cold_cost.cycles and warm_cost.energy_uj < cold_cost.energy_uj
    assert warm_cost.loaded_bound_cycles == 0 < cold_cost.loaded_bound_cycles
    result = generate(progs, [5, 6, 7], 3, with_float=False)
    assert [s.program for s in result.steps] == ["prefill", "decode", "decode-warm"]
    assert result.bit_exact, result.steps
    session = DecoderSession(progs)
    session.run(progs.prefill, [5, 6, 7], 0)
    with pytest.raises(
        CimcError, match=r"decode-warm.cimasm:\d+:3: core \d+: mvm: macro m\d+ cell"
    ):
        session.run(progs.decode, [1], 3, progs.warm.warm)  # no macros carried yet


def test_non_decoders_and_static_exports_are_refused() -> None:
    with pytest.raises(CimcError, match=r"attention is not causal: not a decoder model"):
        build_decoder(tiny_export(causal=False), arch("tiny"), 2, 5)
    with pytest.raises(CimcError, match=r"the model has no dynamic sequence dimension"):
        build_decoder(tiny_export(dynamic=False), arch("tiny"), 2, 5)
    with pytest.raises(CimcError, match=r"leaves no room to decode"):
        build_decoder(tiny_export(), arch("tiny"), 5, 5)


def test_small_custom_decoder_without_mask_input() -> None:
    progs = build_decoder(tiny_export(), arch("tiny"), 2, 5)
    assert progs.model.mask_input is None
    result = generate(progs, [1, 2], 4)
    assert result.bit_exact and len(result.tokens) == 4


def test_streaming_policies_compared_and_checked() -> None:
    from cimc.decode.policies import compare_policies
    from cimc.decode.programs import load_decoder

    dm = load_decoder(tiny_export(), 5)
    rows = compare_policies(dm, arch("default"), 2, ("sequential", "double-buffer"), 2)
    assert [r.policy for r in rows] == ["sequential", "double-buffer"]
    for row in rows:
        assert row.bit_exact is True
        assert row.cold.weight_bytes_loaded == row.cold.weight_bytes > 0
        assert row.warm.weight_bytes_loaded <= row.cold.weight_bytes_loaded
        assert row.planned_bytes_per_token <= row.cold.weight_bytes
        assert (
            "cycles" in row.line() and row.as_json()["warm"]["makespan_cycles"] == row.warm.cycles
        )
