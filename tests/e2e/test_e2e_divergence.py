"""Step 5: break one instruction of an emitted program; verify names the diverging value."""

from __future__ import annotations

from dataclasses import replace

from cimc.backend.builder.compiled import Compiled
from cimc.machine.program import CoreStream, Instr, Program
from cimc.pipeline import PipelineOptions, compile_model
from cimc.reference.float_model import default_inputs
from cimc.verify import located_program, verify_compiled
from tests.e2e.e2e_helpers import arch, float_input, import_module, mlp, zoo_graph


def corrupt(program: Program, comment_prefix: str, opcode: str, new_opcode: str) -> Program:
    """The program with the first `opcode` of the node whose comment starts with the prefix
    turned into `new_opcode` (same operands: still a valid program)."""
    streams, done = [], False
    for stream in program.cores:
        items = []
        for item in stream.items:
            hit = (
                isinstance(item, Instr)
                and not done
                and item.opcode == opcode
                and (item.comment or "").startswith(comment_prefix)
            )
            if hit:
                assert isinstance(item, Instr)
                item, done = replace(item, opcode=new_opcode), True
            items.append(item)
        streams.append(CoreStream(stream.core, tuple(items)))
    assert done, f"no {opcode} of {comment_prefix} in the program"
    return replace(program, cores=tuple(streams))


def _verify_broken(compiled: Compiled, float_graph, inputs, prefix: str, op: str, new: str):  # type: ignore[no-untyped-def]
    broken = corrupt(compiled.program, prefix, op, new)
    return verify_compiled(compiled, float_graph, inputs, program=located_program(compiled, broken))


def test_mlp_corrupted_bias_add_names_its_linear() -> None:
    x = float_input((2, 4, 40))
    result = compile_model(import_module(mlp((40, 64, 48, 8)), x), arch("tiny"), PipelineOptions())
    inputs = {"input": x}
    assert verify_compiled(result.compiled, result.float_graph, inputs).bit_exact
    report = _verify_broken(result.compiled, result.float_graph, inputs, "%linear_1 ", "add", "sub")
    assert not report.bit_exact and report.mismatched_elements > 0
    d = report.divergence
    assert d is not None and d.value == "linear_1"
    assert d.got != d.want and d.mismatched > 0
    # the instruction that wrote the wrong element belongs to %linear_1 and has a line
    assert d.instruction_location.startswith("model.cimasm:")
    line = int(d.instruction_location.split(":")[1])
    text = located_program(result.compiled).source_name
    assert text == "model.cimasm" and line > 1
    assert "linear_1" in d.message()


def test_transformer_corrupted_residual_add_names_it() -> None:
    """In a transformer the first wrong value is the broken residual add, not the output."""
    result = compile_model(zoo_graph("gpt2"), arch("default"), PipelineOptions())
    adds = [n for n in result.graph.nodes() if n.op.NAME == "q.add"]
    target = adds[1]  # a residual add inside the layer
    inputs = default_inputs(result.float_graph, seed=5)
    report = _verify_broken(
        result.compiled, result.float_graph, inputs, f"%{target.name} ", "add", "sub"
    )
    assert not report.bit_exact
    assert report.divergence is not None and report.divergence.value == target.name
    assert report.divergence.error == ""


def test_run_time_error_is_reported_at_its_node() -> None:
    """rsum -> rmax in a layer_norm makes the variance negative: ISQRT fails at run time;
    verify reports the failure at the norm's instruction instead of a traceback."""
    result = compile_model(zoo_graph("gpt2"), arch("default"), PipelineOptions())
    norm = next(n for n in result.graph.nodes() if n.op.NAME == "q.layer_norm")
    inputs = default_inputs(result.float_graph, seed=5)
    report = _verify_broken(
        result.compiled, result.float_graph, inputs, f"%{norm.name} ", "rsum", "rmax"
    )
    assert not report.bit_exact
    d = report.divergence
    assert d is not None and d.value == norm.name and "isqrt" in d.error
    assert d.instruction.startswith("isqrt") and d.instruction_location.startswith("model.cimasm:")


def test_located_program_matches_the_parser() -> None:
    """Line numbers verify reports are those of the written file (as the parser sees it)."""
    from cimc.machine.parser import parse_program
    from cimc.machine.printer import print_program

    x = float_input((2, 4, 40))
    result = compile_model(import_module(mlp((40, 64, 8)), x), arch("tiny"), PipelineOptions())
    mine = located_program(result.compiled)
    parsed = parse_program(print_program(result.compiled.program), "model.cimasm")
    assert mine == parsed
    pairs = [
        (a, b)
        for s, t in zip(mine.cores, parsed.cores, strict=True)
        for a, b in zip(s.instrs, t.instrs, strict=True)
    ]
    assert len(pairs) > 20
    assert all((a.line, a.col) == (b.line, b.col) for a, b in pairs)
