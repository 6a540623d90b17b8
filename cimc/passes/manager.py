"""Passes by name, pipeline strings, and a pass manager that verifies between passes.

    passes = parse_pipeline("simplify,fold-constants{max-elements=4096},cse,dce")
    graph = PassManager(passes, print_ir_after_all=True, print_fn=sys.stderr.write).run(graph)

A pass is a frozen dataclass whose fields are its options. `GraphPass.run(graph) -> bool`
rewrites a Graph in place; a pass changing IR level implements `apply` and returns the new
IR in its PassResult. Any IR with a `verify()` method can go through the manager, and is
printed by `print_graph` (a Graph) or `str` (any other level: a plan, a program).

A `CompositePass` names a sub-pipeline (`idioms`, `backend`): the manager runs, verifies,
times and prints its passes one by one; `--print-ir-after NAME` of a composite prints after
its last pass. Passes register by NAME from the modules of `PASS_PACKAGES`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import pkgutil
import re
import sys
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from cimc.errors import CimcError
from cimc.gc_pause import gc_paused
from cimc.ir.graph import Graph
from cimc.ir.printer import print_graph


@dataclass(frozen=True)
class PassResult:
    ir: Any
    modified: bool


@dataclass(frozen=True)
class Pass:
    """Base of all passes; NAME is the pipeline spelling (``fold-constants``); INPUT and
    OUTPUT the IR levels it consumes and produces: "graph" (float or quantized), "plan"
    (a graph with the backend's plans) or "program" (assembly)."""

    NAME: ClassVar[str] = ""
    INPUT: ClassVar[str] = "graph"
    OUTPUT: ClassVar[str] = "graph"

    def apply(self, ir: Any) -> PassResult:
        raise NotImplementedError

    def spec(self) -> str:
        """The pipeline text of this pass with all its options (sorted)."""
        options = [
            f"{f.name.replace('_', '-')}={_format_option(getattr(self, f.name))}"
            for f in sorted(option_fields(type(self)), key=lambda f: f.name)
        ]
        return f"{self.NAME}{{{','.join(options)}}}" if options else self.NAME


def context(default: Any = None) -> Any:
    """A pass field that is not an option: set by the caller (an Arch object, a lowering
    table), never spelled in pipeline text nor printed by `spec`."""
    return dataclasses.field(default=default, metadata={"option": False}, compare=False)


def option_fields(cls: type[Pass]) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("option", True)]


@dataclass(frozen=True)
class CompositePass(Pass):
    """A named sub-pipeline; the manager expands it into its passes."""

    def passes(self) -> list[Pass]:
        raise NotImplementedError

    def apply(self, ir: Any) -> PassResult:
        modified = False
        for p in self.passes():
            result = p.apply(ir)
            ir, modified = result.ir, modified or result.modified
        return PassResult(ir, modified)


@dataclass(frozen=True)
class GraphPass(Pass):
    """A pass that rewrites a Graph in place; `run` returns whether it changed anything."""

    def apply(self, ir: Any) -> PassResult:
        if not isinstance(ir, Graph):
            raise CimcError(f"pass {self.NAME} runs on a graph, not on {type(ir).__name__}")
        return PassResult(ir, self.run(ir))

    def run(self, graph: Graph) -> bool:
        raise NotImplementedError


PASSES: dict[str, type[Pass]] = {}
PassClass = TypeVar("PassClass", bound=type[Pass])


def register_pass(cls: PassClass) -> PassClass:
    """Class decorator: make a pass available to pipeline strings under its NAME."""
    if not cls.NAME or cls.NAME in PASSES:
        raise ValueError(f"pass {cls.__name__} has an empty or duplicate NAME '{cls.NAME}'")
    PASSES[cls.NAME] = cls
    return cls


def pass_class(name: str) -> type[Pass]:
    _load_builtin_passes()
    try:
        return PASSES[name]
    except KeyError:
        known = ", ".join(sorted(PASSES))
        raise CimcError(f"unknown pass '{name}' (known: {known})", "pipeline") from None


def parse_pipeline(text: str) -> list[Pass]:
    """`a,b{opt=1,flag=true},c` -> pass instances; errors say which column is wrong."""
    passes: list[Pass] = []
    for start, item in _split_top_level(text):
        name, _, rest = item.partition("{")
        name = name.strip()
        if not name:
            raise CimcError("empty pass name", f"pipeline:{start + 1}")
        cls = pass_class(name)
        options = _parse_options(cls, rest, start + len(item) - len(rest)) if rest else {}
        passes.append(cls(**options))
    return passes


def describe_passes() -> str:
    """One line per registered pass: name, default options, first docstring line (a
    composite: the passes it runs)."""
    _load_builtin_passes()
    lines = []
    for name in sorted(PASSES):
        cls = PASSES[name]
        try:
            instance: Pass | None = cls()
        except TypeError:  # a pass with required options
            instance = None
        if isinstance(instance, CompositePass):
            steps = expand([instance])
            levels = f"{steps[0].p.INPUT} -> {steps[-1].p.OUTPUT}"
            summary = "= " + ",".join(s.p.NAME for s in steps)
        else:
            levels, summary = f"{cls.INPUT} -> {cls.OUTPUT}", _summary(cls)
        spec = instance.spec() if instance is not None else name
        lines.append(f"{spec:40s} {levels:19s} {summary}")
    return "\n".join(lines) + "\n"


def _summary(cls: type[Pass]) -> str:
    """The first line of the pass's own docstring, else of its module's (one pass per file,
    its doc starting "Pass name: what it does")."""
    own = vars(cls).get("__doc__") or ""
    if own and not own.startswith(f"{cls.__name__}("):  # dataclasses write the signature
        return own.strip().splitlines()[0]
    doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
    return doc[0].split(": ", 1)[-1] if doc else ""


def pipeline_text(passes: Sequence[Pass]) -> str:
    return ",".join(p.spec() for p in passes)


@dataclass(frozen=True)
class PassTiming:
    name: str
    seconds: float
    modified: bool


@dataclass(frozen=True)
class Step:
    """One pass as the manager runs it; `group` is the composite it came from ("" if none)."""

    p: Pass
    group: str = ""


def expand(passes: Sequence[Pass | Step]) -> list[Step]:
    """Composite passes replaced by their passes (recursively), each tagged with its group."""
    steps: list[Step] = []
    for p in passes:
        if isinstance(p, Step):
            steps.append(p)
        elif isinstance(p, CompositePass):
            steps += [Step(s.p, s.group or p.NAME) for s in expand(p.passes())]
        else:
            steps.append(Step(p))
    return steps


class PassManager:
    """Runs passes in order, verifying the IR after each one (and before the first).

    `verify()` is an IR's cheap check; an IR may also have `verify_deep()` (a program: the
    machine's full validator, races included), run after each pass with `deep_verify_each`
    and otherwise left to the caller at the end of the pipeline (`verify_deep`).

    Printing, as MLIR's flags: `print_ir_before` / `print_ir_after` (pass or composite
    names), `print_ir_after_all`, and `print_ir_after_change` (print after a pass only if
    it changed the IR; alone it means "after every pass that changed it")."""

    def __init__(
        self,
        passes: Sequence[Pass | Step],
        *,
        verify_each: bool = True,
        deep_verify_each: bool = False,
        print_ir_after_all: bool = False,
        print_ir_after: Sequence[str] = (),
        print_ir_before: Sequence[str] = (),
        print_ir_after_change: bool = False,
        time_passes: bool = False,
        print_fn: Callable[[str], object] | None = None,
        printer: Callable[[Any], str] | None = None,
        on_pass: Callable[[int, Pass], object] | None = None,
    ) -> None:
        for name in (*print_ir_after, *print_ir_before):
            pass_class(name)  # a misspelled pass name is an error, not silence
        self.steps = expand(passes)
        check_levels(self.steps)
        self.verify_each = verify_each
        self.deep_verify_each = deep_verify_each
        self.print_ir_after_all = print_ir_after_all or (
            print_ir_after_change and not print_ir_after
        )
        self.print_ir_after = frozenset(print_ir_after)
        self.print_ir_before = frozenset(print_ir_before)
        self.print_ir_after_change = print_ir_after_change
        self.time_passes = time_passes
        # Looked up at print time so a redirected stderr (tests, the CLI) is honoured.
        self.print_fn = print_fn or (lambda text: sys.stderr.write(text))
        self.printer = printer or default_printer
        self.on_pass = on_pass  # told (index, pass) before each pass runs: progress display
        self.timings: list[PassTiming] = []

    @property
    def passes(self) -> list[Pass]:
        return [s.p for s in self.steps]

    def run(self, ir: Any) -> Any:
        """Run the pipeline; returns the final IR (the same object for in-place passes)."""
        self.timings = []
        if self.verify_each:
            _verify(ir, "the input IR is invalid before any pass ran", self.deep_verify_each)
        for k, step in enumerate(self.steps):
            p = step.p
            if self.on_pass is not None:
                self.on_pass(k, p)
            if p.NAME in self.print_ir_before or (
                step.group in self.print_ir_before and self._first_of_group(k)
            ):
                self.print_fn(f"// ----- IR before {p.spec()} ----- //\n{self.printer(ir)}")
            # Backend passes build ~10^5 plan and instruction objects and no reference
            # cycles: a GC pass over all of them costs more than the passes (12-19% of a
            # BERT-base compile).
            with gc_paused() if p.OUTPUT != "graph" else contextlib.nullcontext():
                result = self._apply(k, p, ir)
            ir = result.ir
            if self._prints_after(k, result.modified):
                self.print_fn(f"// ----- IR after {p.spec()} ----- //\n{self.printer(ir)}")
        if self.time_passes:
            self.print_fn(self.timing_report())
        return ir

    def _apply(self, k: int, p: Pass, ir: Any) -> PassResult:
        """Run pass `k`, time it, and verify what it produced."""
        started = time.perf_counter()
        try:
            result = p.apply(ir)
        except CimcError as e:
            raise CimcError(f"pass {p.NAME} failed: {e.message}", e.location) from None
        self.timings.append(PassTiming(p.NAME, time.perf_counter() - started, result.modified))
        if self.verify_each:
            before = ", ".join(s.p.NAME for s in self.steps[:k]) or "none"
            context = f"pass {p.NAME} produced invalid IR (passes before it: {before})"
            _verify(result.ir, context, self.deep_verify_each)
        return result

    def _first_of_group(self, k: int) -> bool:
        return k == 0 or self.steps[k - 1].group != self.steps[k].group

    def _last_of_group(self, k: int) -> bool:
        return k == len(self.steps) - 1 or self.steps[k + 1].group != self.steps[k].group

    def _prints_after(self, k: int, modified: bool) -> bool:
        step = self.steps[k]
        wanted = (
            self.print_ir_after_all
            or step.p.NAME in self.print_ir_after
            or (step.group in self.print_ir_after and self._last_of_group(k))
        )
        return wanted and (modified or not self.print_ir_after_change)

    def timing_report(self) -> str:
        return timing_report(self.timings)


def check_levels(steps: Sequence[Step]) -> None:
    """Each pass must consume the IR level the pass before it produces."""
    for before, step in zip(steps, steps[1:], strict=False):
        if step.p.INPUT != before.p.OUTPUT:
            raise CimcError(
                f"pass {step.p.NAME} runs on a {step.p.INPUT}, but after {before.p.NAME} "
                f"the IR is a {before.p.OUTPUT}",
                "pipeline",
            )


def timing_report(timings: Sequence[PassTiming]) -> str:
    """The `--time-passes` table: per pass its time, share and whether it changed the IR."""
    total = sum(t.seconds for t in timings)
    lines = ["// ----- pass timing ----- //"]
    for t in timings:
        share = 100 * t.seconds / total if total else 0.0
        changed = "" if t.modified else "  (no change)"
        lines.append(f"{t.seconds * 1000:10.3f} ms {share:5.1f}%  {t.name}{changed}")
    lines.append(f"{total * 1000:10.3f} ms 100.0%  total")
    return "\n".join(lines) + "\n"


def default_printer(ir: Any) -> str:
    return print_graph(ir) if isinstance(ir, Graph) else str(ir)


def _verify(ir: Any, context: str, deep: bool = False) -> None:
    checks = [getattr(ir, "verify", None), getattr(ir, "verify_deep", None) if deep else None]
    for check in checks:
        if check is None:
            continue
        try:
            check()
        except CimcError as e:
            raise CimcError(f"{context}: {e.message}", e.location) from None


def verify_deep(ir: Any, context: str = "the pipeline produced invalid IR") -> None:
    """The IR's deep check, if it has one (a program: the machine's validator). Without the
    garbage collector, as the passes run: the validator's ~10^5 accesses and clocks would
    set off collections over the whole program (benchmarks/FINDINGS.md, "Cross-core
    ordering index")."""
    with gc_paused():
        _verify(ir, context, deep=True)


def _split_top_level(text: str) -> list[tuple[int, str]]:
    """Split on commas outside braces, keeping each item's start column (0-based)."""
    items: list[tuple[int, str]] = []
    depth, start = 0, 0
    for k, ch in enumerate(text + ","):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise CimcError("unbalanced '}'", f"pipeline:{k + 1}")
        elif ch == "," and depth == 0:
            items.append((start, text[start:k]))
            start = k + 1
    if depth:
        raise CimcError("unclosed '{'", f"pipeline:{len(text)}")
    return items


def _parse_options(cls: type[Pass], text: str, column: int) -> dict[str, Any]:
    """Options `k=v` separated by commas or spaces; `column` is where `text` starts (0-based)."""
    if not text.rstrip().endswith("}"):
        raise CimcError(f"options of {cls.NAME} must end with '}}'", f"pipeline:{column + 1}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in option_fields(cls)}
    options: dict[str, Any] = {}
    for m in re.finditer(r"[^\s,]+", text.rstrip()[:-1]):
        where = f"pipeline:{column + m.start() + 1}"
        key, sep, value = m.group().partition("=")
        field = key.replace("-", "_")
        if not sep or field not in fields:
            known = ", ".join(sorted(f.replace("_", "-") for f in fields)) or "none"
            raise CimcError(f"{cls.NAME} has no option '{key}' (options: {known})", where)
        options[field] = _convert_option(cls.NAME, key, hints[field], value, where)
    return options


def _convert_option(pass_name: str, key: str, kind: Any, value: str, where: str) -> Any:
    try:
        if kind is bool:
            if value not in ("true", "false"):
                raise ValueError(value)
            return value == "true"
        if kind in (int, float, str):
            return kind(value)
    except ValueError:
        pass
    raise CimcError(f"option {key} of {pass_name} must be {kind.__name__}, got '{value}'", where)


def _format_option(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


PASS_PACKAGES = (
    "cimc.passes",
    "cimc.backend.stages",
)  # every module of these registers its passes on import


def _load_builtin_passes() -> None:
    """Import every module of PASS_PACKAGES once, so each pass file registers itself."""
    for package in PASS_PACKAGES:
        path = importlib.import_module(package).__path__
        for module in sorted(m.name for m in pkgutil.iter_modules(path)):
            importlib.import_module(f"{package}.{module}")
