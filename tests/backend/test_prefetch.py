"""Weight streaming in emitted programs (cimc/backend/stream/prefetch.py): every policy runs
bit-exact, loads each weight byte once, and the policies differ as they should."""

from __future__ import annotations

import numpy as np
import pytest

from cimc.backend.builder.compiled import Compiled, graph_outputs, program_inputs
from cimc.backend.stages.backend import compile_graph
from cimc.backend.stream.prefetch import IMAGE
from cimc.errors import CimcError
from cimc.machine.interpreter import run_program
from cimc.machine.program import MacroRef
from cimc.machine.schedule import simulate
from cimc.quant.golden import Golden
from cimc.quant.quantize import quantize_model
from cimc.verify import weight_bytes_loaded
from tests.e2e.e2e_helpers import arch, float_input, import_module, mlp

DIMS = (64, 96, 80, 64)  # 20 KiB of weights; `tiny` holds 8 KiB in its macros
WEIGHT_BYTES = 64 * 96 + 96 * 80 + 80 * 64


@pytest.fixture(scope="module")
def case() -> tuple[object, np.ndarray]:
    x = float_input((1, 6, 64))
    return quantize_model(import_module(mlp(DIMS), x)).graph, x


def _run(compiled: Compiled, x: np.ndarray) -> np.ndarray:
    feeds = program_inputs(compiled, {"input": x})
    run = run_program(compiled.program, compiled.arch, feeds, compiled.consts)
    return graph_outputs(compiled, run.outputs)["output"]


def _compile(case: tuple[object, np.ndarray], policy: str) -> Compiled:
    return compile_graph(case[0], arch("tiny"), streaming=policy)  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", ["sequential", "double-buffer", "pin-what-fits", "auto"])
def test_every_policy_bit_exact_and_loads_each_weight_once(case, policy: str) -> None:  # type: ignore[no-untyped-def]
    compiled = _compile(case, policy)
    golden = Golden(case[0]).run({"input": case[1]}).outputs["output"]
    assert np.array_equal(_run(compiled, case[1]), golden)
    assert compiled.stream is not None and len(compiled.stream.streamed) > 1
    assert weight_bytes_loaded(compiled.program) == WEIGHT_BYTES
    # the weights come from one load-ordered image, not per-layer constants
    assert IMAGE in compiled.consts and not any(k.endswith(".w") for k in compiled.consts)
    assert compiled.consts[IMAGE].size == WEIGHT_BYTES


def test_auto_picks_a_one_inference_policy(case) -> None:  # type: ignore[no-untyped-def]
    """One program runs one inference: pinning gains nothing there, so auto never pins."""
    compiled = _compile(case, "auto")
    assert compiled.stream is not None
    assert compiled.stream.policy in ("sequential", "double-buffer")


def _phase_spans(compiled: Compiled) -> list[tuple[int, int, int, int]]:
    """Per phase: (first mload start, last mload end, first mvm start, last mvm end). A
    macro window is reused by later phases: its k-th mload belongs to the k-th phase
    placed on it, and an MVM to the phase of the window's latest mload."""
    plan = compiled.stream
    assert plan is not None
    users: dict[tuple[int, int, int, int], list[int]] = {}
    for phase in plan.phases:
        for pt in phase.placement.tiles:
            users.setdefault((pt.core, pt.macro, pt.r0, pt.c0), []).append(phase.index)
    loaded = dict.fromkeys(users, 0)
    holds: dict[tuple[int, int, int, int], int] = {}
    loads: dict[int, list] = {p.index: [] for p in plan.phases}
    uses: dict[int, list] = {p.index: [] for p in plan.phases}
    schedule = simulate(compiled.program, compiled.arch)
    for item in sorted(schedule.items, key=lambda i: (i.core, i.pc)):
        ref = next((o for o in item.instr.operands if isinstance(o, MacroRef)), None)
        w = None if ref is None else (item.core, ref.index, ref.r0, ref.c0)
        if w not in users:
            continue
        if item.instr.opcode == "mload":
            holds[w] = users[w][loaded[w]]
            loaded[w] += 1
            loads[holds[w]].append(item)
        elif item.instr.opcode.startswith("mvm"):
            uses[holds[w]].append(item)
    return [
        (
            min(i.start for i in loads[p]),
            max(i.end for i in loads[p]),
            min(i.start for i in uses[p]),
            max(i.end for i in uses[p]),
        )
        for p in sorted(loads)
    ]


def test_double_buffer_loads_next_phase_while_this_one_computes(case) -> None:  # type: ignore[no-untyped-def]
    """Double-buffer: a load of phase i+1 starts before the last MVM of phase i ends, and
    every phase is loaded before it computes; sequential uses one bank."""
    spans = _phase_spans(_compile(case, "double-buffer"))
    assert any(nxt[0] < cur[3] for cur, nxt in zip(spans, spans[1:], strict=False))
    assert all(load_end <= last_use for _, load_end, _, last_use in spans)
    sequential = _compile(case, "sequential")
    assert sequential.stream is not None and {p.bank for p in sequential.stream.phases} == {0}


def test_policies_change_the_phases(case) -> None:  # type: ignore[no-untyped-def]
    """Two banks halve the macros per phase: more, smaller phases than sequential."""
    seq, dbl = _compile(case, "sequential").stream, _compile(case, "double-buffer").stream
    assert seq is not None and dbl is not None
    assert len(dbl.phases) > len(seq.phases)
    assert max(p.nbytes for p in dbl.phases) < max(p.nbytes for p in seq.phases)


def test_unknown_policy_is_a_located_error(case) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CimcError, match="unknown streaming policy 'fast'"):
        _compile(case, "fast")


def test_weights_that_fit_load_once_from_the_image_under_auto() -> None:
    """Everything fits the macros: auto keeps every weight resident, loaded from the
    load-ordered image ahead of use (no per-layer constants)."""
    x = float_input((1, 3, 32))
    qgraph = quantize_model(import_module(mlp((32, 32, 32)), x)).graph
    compiled = compile_graph(qgraph, arch("tiny"))
    assert compiled.stream is not None and not compiled.stream.streamed
    assert IMAGE in compiled.consts
    assert not any(name.endswith(".w") for name in compiled.consts)
    golden = Golden(qgraph).run({"input": x}).outputs["output"]
    assert np.array_equal(_run(compiled, x), golden)
    assert weight_bytes_loaded(compiled.program) == 2 * 32 * 32
    pinned = compile_graph(qgraph, arch("tiny"), streaming="pin-what-fits")
    assert pinned.stream is not None and not pinned.stream.streamed
    assert np.array_equal(_run(pinned, x), golden)
    assert weight_bytes_loaded(pinned.program) == 2 * 32 * 32
