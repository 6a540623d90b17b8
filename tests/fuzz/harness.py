"""The fuzz oracle: run one program text through everything `cimc run` / `cimc report` do.

Stages: load (read, parse, load the arch, validate: the CLI's `load_program_and_arch`),
run (interpreter, twice), report (schedule, summary, JSON, Perfetto trace, twice). The only
acceptable outcomes are a `CimcError` whose text is one line starting with `FILE:LINE:COL: `
(a line of the program) or `FILE: ` (the program, its arch file), or a result that is the same
both times. Anything else raises `FuzzBug`. Valid programs must also print and parse back to
themselves, never deadlock (interpreter or schedule), and the schedule must order every
pair of gb/dram accesses the validator considers ordered (happens-before).
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import lark
import numpy as np
from safetensors.numpy import save_file

from cimc.commands.json_output import finite as _finite
from cimc.commands.program_files import load_program_and_arch
from cimc.errors import CimcError
from cimc.machine.arch import Arch
from cimc.machine.fastparse import fast_tree
from cimc.machine.interpreter import run_program
from cimc.machine.parser import lark_tree, parse_program
from cimc.machine.printer import print_program
from cimc.machine.program import Program
from cimc.machine.schedule import Schedule, simulate
from cimc.machine.summary import summarize
from cimc.machine.sync import Access, _bytes_overlap, _Skeleton, happens_before, match_messages
from cimc.machine.trace import chrome_trace
from cimc.resources import isa_dir
from tests.fuzz.campaign import FuzzBug

_NP = {"i8": np.int8, "i16": np.int16, "i32": np.int32, "i64": np.int64}
_LOCATED = re.compile(r"^(?P<file>.*?)(?::(?P<line>[0-9]+):(?P<col>[0-9]+))?: \S")
_BIG_INPUT = 1 << 20  # bytes: larger inputs are zeros (cheap), smaller ones random


@dataclass(frozen=True)
class Case:
    """One fuzz input: program text (saved as `name` in the work dir), maybe an arch TOML."""

    text: str
    name: str = "prog.cimasm"
    arch_toml: str | None = None
    input_noise: float = 0.1  # chance of deliberately wrong inputs (names, dtypes, shapes)
    report_twice: float = 1.0  # chance of checking that a second report is identical


class Workdir:
    """A folder with the example constants and inputs, and constants for generated programs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        for path in sorted((isa_dir() / "examples").iterdir()):
            if path.suffix in (".safetensors", ".npz"):
                shutil.copy(path, root / path.name)
        rng = np.random.default_rng(0)
        consts = {
            "w": rng.integers(-127, 128, (32, 32)).astype(np.int8),
            "lut.t": rng.integers(-1000, 1000, (1, 256)).astype(np.int16),
        }
        (root / "weights").mkdir(exist_ok=True)
        save_file(consts, str(root / "tiny.safetensors"))
        save_file(consts, str(root / "weights" / "w.safetensors"))

    @staticmethod
    def seeds() -> list[tuple[str, str]]:
        """(file name, text) of the shipped examples."""
        paths = sorted((isa_dir() / "examples").glob("*.cimasm"))
        return [(p.name, p.read_text()) for p in paths]


def check_error(e: CimcError, files: tuple[str, ...], text: str) -> None:
    """A user-facing error: one line, located in one of `files` (a line of the program)."""
    message = str(e)
    if "\n" in message or "\r" in message:
        raise FuzzBug("multi-line error", repr(message))
    m = _LOCATED.match(message)
    if m is None or m.group("file") not in files:
        raise FuzzBug("unlocated error", repr(message))
    if m.group("line") is not None:
        line, col = int(m.group("line")), int(m.group("col"))
        lines = text.replace("\r\n", "\n").replace("\r", "\n").count("\n")  # as read_text
        if not (1 <= line <= lines + 2 and col >= 1):
            raise FuzzBug("bad error position", repr(message))


def _stage(kind: str, fn, files: tuple[str, ...], text: str):  # type: ignore[no-untyped-def]
    """Run fn(); a located CimcError is returned as a string, anything else is a bug."""
    try:
        return fn()
    except CimcError as e:
        check_error(e, files, text)
        return str(e)
    except FuzzBug:
        raise
    except RecursionError as e:
        raise FuzzBug(f"{kind} crash", f"RecursionError: {e}") from None
    except Exception as e:  # noqa: BLE001 - the point of the oracle
        raise FuzzBug(f"{kind} crash", f"{type(e).__name__}: {e}") from e


def make_inputs(program: Program, rng: random.Random, noise: float) -> dict[str, np.ndarray]:
    """Arrays for every `.input` (random values, zeros when large), sometimes deliberately
    wrong: a missing or extra name, a wrong dtype or shape, NaNs in a float array."""
    gen = np.random.default_rng(rng.randrange(1 << 30))
    inputs: dict[str, np.ndarray] = {}
    for d in program.decls_of("input"):
        assert d.dtype is not None
        dtype = _NP[d.dtype]
        if d.nbytes > _BIG_INPUT:
            inputs[d.name] = np.zeros((d.rows, d.cols), dtype)
        else:
            info = np.iinfo(dtype)
            lo, hi = (info.min, info.max) if rng.random() < 0.2 else (-100, 100)
            inputs[d.name] = gen.integers(lo, hi, (d.rows, d.cols), dtype=dtype, endpoint=True)
    if rng.random() < noise:
        _spoil(inputs, rng)
    return inputs


def _spoil(inputs: dict[str, np.ndarray], rng: random.Random) -> None:
    choice = rng.randrange(5)
    name = rng.choice(sorted(inputs)) if inputs else None
    if choice == 0 or name is None:
        inputs["extra"] = np.zeros((1, 1), np.int8)
    elif choice == 1:
        del inputs[name]
    elif choice == 2:
        inputs[name] = inputs[name].astype(rng.choice((np.float32, np.int64, np.uint8, bool)))
    elif choice == 3:
        inputs[name] = inputs[name].reshape(-1)[: max(inputs[name].size - 1, 0)]
    else:
        inputs[name] = np.full(inputs[name].shape, np.nan, np.float32)


def _same_tree(a: lark.Tree | lark.Token, b: lark.Tree | lark.Token) -> bool:
    if isinstance(a, lark.Token) or isinstance(b, lark.Token):
        if not (isinstance(a, lark.Token) and isinstance(b, lark.Token)):
            return False
        return (a.type, str(a), a.line, a.column) == (b.type, str(b), b.line, b.column)
    if a.data != b.data or len(a.children) != len(b.children):
        return False
    return all(_same_tree(x, y) for x, y in zip(a.children, b.children, strict=True))


def check_fast_parser(text: str) -> None:
    """The fast line parser builds Lark's tree or declines; it never accepts what Lark
    rejects."""
    if not text.endswith("\n"):
        text += "\n"
    fast = fast_tree(text)
    if fast is None:
        return
    try:
        slow = lark_tree(text, "x")
    except CimcError:
        raise FuzzBug("fast parser accepts", repr(text[:200])) from None
    if not _same_tree(fast, slow):
        raise FuzzBug("fast parser tree differs", repr(text[:200]))


def check_schedule_orders_races(program: Program, schedule: Schedule) -> None:
    """Every pair of overlapping gb/dram accesses of two cores (a write among them) that the
    validator orders by happens-before is also ordered in time by the schedule."""
    accesses = _Skeleton(program, match_messages(program)).run()
    times = {(i.core, i.pc): (i.start, i.end) for i in schedule.items}
    for a in accesses:
        for b in accesses:
            if a.core == b.core or not (a.write or b.write) or not happens_before(a, b):
                continue
            if _bytes_overlap(a.view, b.view) and times[_site(a)][1] > times[_site(b)][0]:
                raise FuzzBug(
                    "schedule breaks happens-before",
                    f"core {a.core} line {a.instr.line} ends at {times[_site(a)][1]}, after "
                    f"core {b.core} line {b.instr.line} starts at {times[_site(b)][0]}",
                )


def _site(a: Access) -> tuple[int, int]:
    return (a.core, a.index)


def _report(program: Program, arch: Arch) -> tuple[Schedule, str, str]:
    schedule = simulate(program, arch)
    summary = json.dumps(_finite(summarize(program, arch, schedule).as_dict()), allow_nan=False)
    trace = json.dumps(chrome_trace(schedule, arch, program.source_name), allow_nan=False)
    return schedule, summary, trace


def _outputs_key(result: object) -> object:
    if isinstance(result, str):
        return result
    outputs = result.outputs  # type: ignore[attr-defined]
    return [(k, v.dtype.str, v.shape, v.tobytes()) for k, v in outputs.items()]


def check_case(case: Case, work: Workdir, rng: random.Random, parser_check: bool = False) -> str:
    """Run one case; returns its outcome ('load error', 'run error', 'ok') or raises FuzzBug."""
    path = work.root / case.name
    path.write_text(case.text, encoding="utf-8", errors="surrogateescape")
    arch_option = None
    files = (str(path),)
    if case.arch_toml is not None:
        arch_path = work.root / "arch.toml"
        arch_path.write_text(case.arch_toml)
        arch_option, files = str(arch_path), (str(path), str(arch_path))
    if parser_check:
        check_fast_parser(case.text)
    loaded = _stage("load", lambda: load_program_and_arch(str(path), arch_option), files, case.text)
    if isinstance(loaded, str):
        return "load error"
    program, arch = loaded
    again = _stage("print", lambda: parse_program(print_program(program), str(path)), files, "")
    if again != program:
        raise FuzzBug("print/parse round trip", f"{again!r:.200}")
    inputs = make_inputs(program, rng, case.input_noise)
    runs = [_stage("run", lambda: run_program(program, arch, inputs), files, case.text)]
    runs.append(_stage("run", lambda: run_program(program, arch, inputs), files, case.text))
    if _outputs_key(runs[0]) != _outputs_key(runs[1]):
        raise FuzzBug("nondeterministic run", f"{_outputs_key(runs[0])!r:.200}")
    if isinstance(runs[0], str) and "deadlock" in runs[0]:
        raise FuzzBug("validated program deadlocks", runs[0])
    twice = rng.random() < case.report_twice  # the report is pure: checked on a sample
    reports = [_stage("report", lambda: _report(program, arch), files, case.text)]
    if isinstance(reports[0], str):
        raise FuzzBug("schedule of a validated program fails", reports[0])
    if twice and _report(program, arch) != reports[0]:
        raise FuzzBug("nondeterministic report", case.name)
    check_schedule_orders_races(program, reports[0][0])
    return "run error" if isinstance(runs[0], str) else "ok"
