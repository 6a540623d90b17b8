"""Pipeline strings, IR printing/timing switches and the 'which pass broke it' message."""

from __future__ import annotations

import gc
from dataclasses import dataclass

import pytest

from cimc.errors import CimcError
from cimc.ir import Graph
from cimc.ir.parser import parse_graph
from cimc.ir.printer import print_graph
from cimc.passes.canonicalize import Canonicalize
from cimc.passes.dce import DeadCodeElimination
from cimc.passes.fold_constants import FoldConstants
from cimc.passes.manager import (
    GraphPass,
    PassManager,
    parse_pipeline,
    pipeline_text,
    register_pass,
    verify_deep,
)

TEXT = """graph @g {
  %x = input : f32[2, 4]
  %y = input : f32[4, 2]
  %c = constant dense<[1.0, 2.0, 3.0, 4.0]> : f32[4]
  %d = add(%c, %c) : f32[4]
  %a = mul(%x, %d) : f32[2, 4]
  %r = reshape(%a) {shape = [2, 4]} : f32[2, 4]
  %dead = exp(%x) : f32[2, 4]
  %b = exp(%y) : f32[4, 2]
  return "r" = %r, "b" = %b
}"""


@register_pass
@dataclass(frozen=True)
class BreakTypes(GraphPass):
    """Test-only pass: feeds %a a [4, 2] operand, which the verifier must reject."""

    NAME = "test-break-types"

    def run(self, graph: Graph) -> bool:
        graph.set_inputs("a", ["x", "b"])
        return True


@register_pass
@dataclass(frozen=True)
class Refuse(GraphPass):
    NAME = "test-refuse"
    reason: str = "nothing"

    def run(self, graph: Graph) -> bool:
        raise CimcError(f"cannot handle {self.reason}", "%x")


def test_pipeline_parsing_with_typed_options() -> None:
    passes = parse_pipeline("fold-constants{max-elements=10},dce, canonicalize{max_iterations=3}")
    assert passes == [FoldConstants(max_elements=10), DeadCodeElimination(), Canonicalize(3)]
    text = pipeline_text(passes)
    assert text == (
        "fold-constants{max-elements=10},dce,canonicalize{fold-max-elements=65536,max-iterations=3}"
    )
    assert parse_pipeline(text) == passes
    spaced = parse_pipeline("canonicalize{max-iterations=2 fold-max-elements=5}")
    assert spaced == [Canonicalize(2, 5)]
    assert parse_pipeline("cse{constants=false}")[0].spec() == "cse{constants=false}"


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        (
            "dce,frobnicate",
            r"^pipeline: unknown pass 'frobnicate' \(known: .*canonicalize, .*cse, dce, ",
        ),
        ("dce,cse{fast=true}", r"^pipeline:9: cse has no option 'fast' \(options: constants\)$"),
        (
            "fold-constants{max-elements=lots}",
            r"^pipeline:16: option max-elements of fold-constants"
            r" must be int, got 'lots'$",
        ),
        ("cse{constants=1}", r"must be bool, got '1'"),
        ("dce,,cse", r"^pipeline:5: empty pass name$"),
        ("cse{constants=true", r"^pipeline:18: unclosed '\{'$"),
        ("cse}", r"^pipeline:4: unbalanced '\}'$"),
    ],
)
def test_pipeline_errors_name_the_column(pipeline: str, message: str) -> None:
    with pytest.raises(CimcError, match=message):
        parse_pipeline(pipeline)


def test_broken_ir_names_the_pass_and_its_predecessors() -> None:
    graph = parse_graph(TEXT)
    manager = PassManager(parse_pipeline("dce,simplify,test-break-types,cse"))
    with pytest.raises(CimcError) as info:
        manager.run(graph)
    assert str(info.value) == (
        "%a: pass test-break-types produced invalid IR (passes before it: dce, simplify): "
        "shapes [2, 4], [4, 2] do not broadcast"
    )


def test_first_pass_breaking_ir_and_invalid_input_ir() -> None:
    with pytest.raises(CimcError, match=r"pass test-break-types .* \(passes before it: none\)"):
        PassManager(parse_pipeline("test-break-types")).run(parse_graph(TEXT))
    broken = parse_graph(TEXT)
    broken.set_inputs("a", ["x", "b"])
    with pytest.raises(CimcError, match="^%a: the input IR is invalid before any pass ran"):
        PassManager(parse_pipeline("dce")).run(broken)
    # Without verification the manager does not look (the user asked for it).
    PassManager(parse_pipeline("test-break-types"), verify_each=False).run(parse_graph(TEXT))


def test_pass_errors_are_prefixed_with_the_pass() -> None:
    with pytest.raises(CimcError) as info:
        PassManager(parse_pipeline("dce,test-refuse{reason=cats}")).run(parse_graph(TEXT))
    assert str(info.value) == "%x: pass test-refuse failed: cannot handle cats"


def test_print_ir_after_all_and_after_one_pass() -> None:
    printed: list[str] = []
    PassManager(
        parse_pipeline("fold-constants,dce"), print_ir_after_all=True, print_fn=printed.append
    ).run(parse_graph(TEXT))
    assert [p.splitlines()[0] for p in printed] == [
        "// ----- IR after fold-constants{max-elements=65536} ----- //",
        "// ----- IR after dce ----- //",
    ]
    assert "%d = constant dense<[2.0, 4.0, 6.0, 8.0]>" in printed[0] and "%dead" in printed[0]
    assert "%dead" not in printed[1]

    only: list[str] = []
    graph = parse_graph(TEXT)
    PassManager(
        parse_pipeline("simplify,dce,cse"), print_ir_after=["dce"], print_fn=only.append
    ).run(graph)
    assert len(only) == 1 and only[0].endswith(print_graph(graph))
    with pytest.raises(CimcError, match="unknown pass 'dcee'"):
        PassManager([], print_ir_after=["dcee"])


def test_time_passes_reports_every_pass_and_change() -> None:
    out: list[str] = []
    manager = PassManager(parse_pipeline("dce,dce,cse"), time_passes=True, print_fn=out.append)
    manager.run(parse_graph(TEXT))
    lines = out[-1].splitlines()
    assert lines[0] == "// ----- pass timing ----- //"
    assert lines[1].endswith("%  dce") and lines[2].endswith("dce  (no change)")
    assert lines[3].endswith("cse  (no change)") and lines[4].endswith("100.0%  total")
    assert [t.modified for t in manager.timings] == [True, False, False]


def test_graph_pass_refuses_other_ir() -> None:
    with pytest.raises(CimcError, match="pass dce runs on a graph, not on str"):
        PassManager(parse_pipeline("dce")).run("not a graph")


def test_describe_passes_lists_every_registered_pass_with_its_options() -> None:
    from cimc.passes.manager import PASSES, describe_passes

    lines = describe_passes().splitlines()
    assert len(lines) == len(PASSES)
    names = [line.split("{")[0].split()[0] for line in lines]
    assert names == sorted(names) and {"dce", "cse", "simplify", "fold-constants"} <= set(names)
    fold = next(line for line in lines if line.startswith("fold-constants"))
    assert fold.startswith("fold-constants{max-elements=65536}")
    assert "evaluate nodes whose operands are all constants" in fold


def test_default_print_goes_to_the_current_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    PassManager(parse_pipeline("dce"), print_ir_after=["dce"]).run(parse_graph(TEXT))
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("// ----- IR after dce ----- //\n")


def test_the_deep_check_runs_without_the_garbage_collector() -> None:
    """compile_model's final validation builds ~10^5 objects, as a pass does: no collections
    over the program in between (and the collector is on again after)."""

    class Checked:
        collector_on: bool | None = None

        def verify_deep(self) -> None:
            self.collector_on = gc.isenabled()

    ir = Checked()
    assert gc.isenabled()
    verify_deep(ir)
    assert ir.collector_on is False and gc.isenabled()
