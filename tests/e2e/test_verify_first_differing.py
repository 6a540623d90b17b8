"""verify on a program that is not the compiler's: it also names the first instruction
whose result differs from a shadow run of the compiled program (the corrupted one), not
only the last writer of the first diverging value."""

from __future__ import annotations

from cimc.machine.interpreter import instr_text
from cimc.pipeline import PipelineOptions, compile_model
from cimc.verify import located_program, verify_compiled
from tests.e2e.e2e_helpers import arch, float_input, import_module, mlp
from tests.e2e.test_e2e_divergence import corrupt


def test_corrupted_instruction_is_named_first() -> None:
    x = float_input((2, 4, 40))
    result = compile_model(import_module(mlp((40, 64, 48, 8)), x), arch("tiny"), PipelineOptions())
    broken = located_program(
        result.compiled, corrupt(result.compiled.program, "%linear_1 ", "add", "sub")
    )
    report = verify_compiled(result.compiled, result.float_graph, {"input": x}, program=broken)
    d = report.divergence
    assert d is not None and d.value == "linear_1"
    culprit = next(
        (s.core, i)
        for s in broken.cores
        for i in s.instrs
        if i.opcode == "sub" and (i.comment or "").startswith("%linear_1 ")
    )
    assert d.first_differing == instr_text(culprit[1]) and d.first_differing_core == culprit[0]
    assert d.first_differing_location == broken.loc(culprit[1])
    assert "first instruction whose result differs" in d.message()
    assert report.as_json()["divergence"]["first_differing"].startswith("sub ")


def test_compiled_program_itself_has_no_shadow() -> None:
    x = float_input((2, 4, 40))
    result = compile_model(import_module(mlp((40, 16, 8)), x), arch("tiny"), PipelineOptions())
    report = verify_compiled(result.compiled, result.float_graph, {"input": x})
    assert report.bit_exact and report.divergence is None
