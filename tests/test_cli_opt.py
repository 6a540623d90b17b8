"""`cimc opt`: IR text in, passes, IR text out; files with their side file, the pass
manager's switches, IR dumps read back, and bad input as one located line (exit 2)."""

from __future__ import annotations

import io
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from cimc.cli import main
from cimc.dialects import load_dialects
from cimc.ir.parser import parse_graph
from cimc.ir.printer import print_graph
from cimc.passes.manager import PassManager, parse_pipeline

ROOT = Path(__file__).resolve().parents[1]
GRAPH = """graph @g {
  %x = input {meaning = "float"} : f32[2, 4]
  %w = constant @w : f32[4, 4]
  %y = linear(%x, %w) : f32[2, 4]
  %y2 = linear(%x, %w) : f32[2, 4]
  %dead = exp(%y) : f32[2, 4]
  %s = add(%y, %y2) : f32[2, 4]
  return "s" = %s
}
"""
W = np.arange(16, dtype=np.float32).reshape(4, 4) / 8


def cimc(*args: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.stdin", io.StringIO(stdin))
        status = main(list(args))
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def block(tmp_path: Path) -> Path:
    """g.ir and g.ir.safetensors (its weight) in a scratch folder."""
    (tmp_path / "g.ir").write_text(GRAPH)
    save_file({"w": W}, str(tmp_path / "g.ir.safetensors"))
    return tmp_path / "g.ir"


def test_passes_run_and_the_result_prints_to_stdout(block: Path) -> None:
    status, out, err = cimc("opt", str(block), "-p", "cse,dce")
    assert status == 0 and err == ""
    assert "%s = add(%y, %y) : f32[2, 4]" in out
    assert "%y2" not in out and "%dead" not in out


def test_no_pipeline_prints_the_input_back(block: Path) -> None:
    assert cimc("opt", str(block)) == (0, GRAPH, "")


def test_output_file_and_side_file_round_trip_byte_identical(block: Path) -> None:
    load_dialects()
    folder = block.parent
    for name in ("a", "b"):
        args = ["-p", "quantize{samples=2,quiet=true}", "-o", str(folder / f"{name}.ir")]
        assert cimc("opt", str(block), *args) == (0, "", "")
    for suffix in (".ir", ".ir.safetensors"):
        assert (folder / f"a{suffix}").read_bytes() == (folder / f"b{suffix}").read_bytes()
    text = (folder / "a.ir").read_text()
    assert "q.linear(%x_q) {bits = 16, plan = LinearPlan<weight = @y.plan.weight : i8[4, 4]" in text
    assert cimc("opt", str(folder / "a.ir")) == (0, text, "")


def test_stdin_and_explicit_constants(block: Path) -> None:
    consts = block.parent / "w.npz"
    np.savez(consts, w=W)
    status, out, _ = cimc("opt", "-", "--constants", str(consts), "-p", "dce", stdin=GRAPH)
    assert status == 0 and "%dead" not in out and "%y2" in out


def test_an_unwritten_array_is_noted_on_stderr(block: Path) -> None:
    status, out, err = cimc("opt", str(block), "-p", "fold-constants")
    assert status == 0 and out.startswith("graph @g")
    assert err == ""  # @w is in g.ir.safetensors: the printed text is loadable as it is
    block.write_text(
        "graph @f {\n"
        '  %x = input {meaning = "float"} : f32[2, 4]\n'
        "  %w = constant @w : f32[4, 4]\n"
        "  %wt = transpose(%w) {perm = [1, 0]} : f32[4, 4]\n"
        "  %y = matmul(%x, %wt) : f32[2, 4]\n"
        '  return "y" = %y\n}\n'
    )
    status, out, err = cimc("opt", str(block), "-p", "fold-constants")
    assert "%wt = constant @wt : f32[4, 4]" in out
    assert err.startswith("cimc opt: 1 array(s) printed by reference (@wt, ...) are in no file")
    assert cimc("opt", str(block), "-p", "fold-constants", "-q")[2] == ""


def test_manager_switches_print_to_stderr(block: Path) -> None:
    status, out, err = cimc(
        "opt", str(block), "-p", "cse,dce,cse", "--print-ir-after-change", "--time-passes"
    )
    assert status == 0 and out.count("graph @g") == 1
    headers = re.findall(r"// ----- IR after ([\w-]+)", err)
    assert headers == ["cse", "dce"]  # the second cse changed nothing
    assert "// ----- pass timing ----- //" in err and "(no change)" in err
    _, _, err = cimc("opt", str(block), "-p", "cse,dce", "--print-ir-before", "dce")
    assert re.findall(r"// ----- IR (\w+) ([\w-]+)", err) == [("before", "dce")]
    _, _, err = cimc("opt", str(block), "-p", "cse,dce", "--print-ir-after-all")
    assert err.count("// ----- IR after") == 2


def test_list_passes(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = cimc("opt", "--list-passes")
    assert status == 0
    names = [line.split("{")[0].split()[0] for line in out.splitlines()]
    assert {"cse", "dce", "quantize", "canonicalize", "idioms-norm"} <= set(names)


def test_a_pass_manager_dump_reads_back(tmp_path: Path) -> None:
    """What --print-ir-after prints (header included) is what `cimc opt` reads."""
    load_dialects()
    graph = parse_graph(GRAPH, {"w": W})
    dumps: list[str] = []
    PassManager(parse_pipeline("cse,dce"), print_ir_after=["dce"], print_fn=dumps.append).run(graph)
    (tmp_path / "dump.ir").write_text(dumps[0])
    status, out, _ = cimc("opt", str(tmp_path / "dump.ir"), "--random-constants", "0")
    assert status == 0 and out == print_graph(graph)


@pytest.mark.slow  # an ONNX import and quantization (about 10 s)
def test_a_model_is_imported_and_compile_prints_the_same_ir(tmp_path: Path) -> None:
    model = str(ROOT / "tests" / "importers" / "data" / "bert_dynamo.onnx")
    pipeline = "canonicalize,check-canonical,quantize"
    out = str(tmp_path / "bert.ir")
    assert cimc("opt", model, "--seq-len", "8", "-p", pipeline, "-o", out, "-q")[0] == 0
    status, _, dump = cimc(
        "compile", model, "--seq-len", "8", "--arch", "tiny", "-o", str(tmp_path / "b.cimasm"),
        "--print-ir-after", "quantize",
    )  # fmt: skip
    assert status == 0
    assert dump[dump.index("graph @") :] == Path(out).read_text()
    assert cimc("opt", out)[1] == Path(out).read_text()


BAD = [
    (["opt", "{d}/b.ir"], b"\xff\xfe", "{d}/b.ir: cannot read the IR: 'utf-8' codec can't decode"),
    (["opt", "{d}/g.ir"], GRAPH.replace("exp(", "frob("), "{d}/g.ir:6:11: unknown op 'frob'"),
    (["opt", "{d}/g.ir"], GRAPH + GRAPH, "{d}/g.ir:10:1: a second graph starts here"),
    (
        ["opt", "{d}/g.ir"],
        GRAPH.replace("exp(%y)", "q.requant(%y) {bits = 8, plan = AddPlan<>, scale = 1.0}"),
        "{d}/g.ir:6:43: expected Requant<...>",
    ),
    (["opt", "{d}/g.ir", "-p", "cse{constants=maybe}"], GRAPH, "pipeline:5: option constants"),
    (["opt", "{d}/g.ir", "-p", "dce", "--print-ir-after", "frob"], GRAPH, "pipeline: unknown"),
    (["opt", "{d}/g.ir", "-o", "{d}/no/x.ir"], GRAPH, "{d}/no/x.ir: cannot write here:"),
    (["opt", "{d}/g.ir", "--constants", "{d}/c.bin"], GRAPH, "{d}/c.bin: a constants file must"),
    (["opt", "{d}/m.onnx"], None, "{d}/m.onnx: model file not found"),
]


@pytest.mark.parametrize(("argv", "text", "message"), BAD)
def test_bad_input_is_one_located_line(
    argv: list[str], text: str | bytes | None, message: str, block: Path
) -> None:
    d = str(block.parent)
    path = Path(argv[1].replace("{d}", d))
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    (block.parent / "c.bin").write_bytes(b"")
    status, out, err = cimc(*[a.replace("{d}", d) for a in argv])
    assert (status, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith(message.replace("{d}", d)), err


def test_backend_passes_take_the_arch_and_write_a_program(block: Path, tmp_path: Path) -> None:
    """-p backend --arch tiny -o P.cimasm writes what compile_graph + write_compiled do."""
    from cimc.backend.builder.saved import write_compiled
    from cimc.backend.stages.backend import compile_graph
    from cimc.machine.arch import load_arch

    quantized = block.parent / "q.ir"
    assert cimc("opt", str(block), "-p", "quantize{quiet=true}", "-o", str(quantized))[0] == 0
    out = tmp_path / "opt" / "q.cimasm"
    out.parent.mkdir()
    assert cimc("opt", str(quantized), "-p", "backend", "--arch", "tiny", "-o", str(out))[0] == 0
    load_dialects()
    graph = parse_graph(quantized.read_text(), tmp_path / "q.ir.safetensors")
    ref = tmp_path / "ref" / "q.cimasm"
    write_compiled(compile_graph(graph, load_arch("tiny"), name="q"), ref, "backend")
    assert out.read_text().replace(str(out), "") == ref.read_text().replace(str(ref), "")
    assert (
        out.with_suffix(".safetensors").read_bytes() == ref.with_suffix(".safetensors").read_bytes()
    )
    status, _, err = cimc("opt", str(quantized), "-p", "backend", "--arch", "huge")
    assert status == 2 and err.startswith("--arch: unknown architecture preset 'huge'")
