"""A compiled graph: the program, its constants, and how graph values map onto it.

    compiled = compile_graph(qgraph, load_arch("tiny"))   # cimc/backend/stages/backend.py
    write_compiled(compiled, Path("model.cimasm"))        # + model.safetensors beside it
    feeds = program_inputs(compiled, {"x": x})            # host side: q.quantize of floats
    run = run_program(compiled.program, arch, feeds, compiled.consts)
    outs = graph_outputs(compiled, run.outputs)           # graph shapes and dtypes

`Compiled` is also the IR of the program passes: it verifies with the machine's validator
and prints as assembly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cimc.backend.builder.alloc import NP_OF
from cimc.backend.plan.memory import MemoryPlan
from cimc.backend.plan.streaming import StreamPlan
from cimc.errors import CimcError
from cimc.ir.graph import Graph
from cimc.machine.arch import Arch
from cimc.machine.consts_file import write_consts
from cimc.machine.printer import print_program
from cimc.machine.program import Program, View
from cimc.machine.validator import validate
from cimc.quant import constants as qc


@dataclass(frozen=True)
class InputBinding:
    """A program `.input` and the graph input it is computed from on the host."""

    decl: str
    graph_input: str
    dtype: str  # machine dtype of the declaration
    rows: int
    cols: int
    scale: float | None = None  # q.quantize: codes = clamp(rint(x / scale))
    bits: int | None = None


@dataclass(frozen=True)
class OutputBinding:
    decl: str
    graph_output: str
    value: str  # the graph value written there
    shape: tuple[int, ...]
    numpy_dtype: str


@dataclass(frozen=True)
class Compiled:
    """A compiled graph: the program, its constants, and how graph values map onto it."""

    program: Program
    consts: dict[str, np.ndarray]
    arch: Arch
    graph: Graph
    inputs: tuple[InputBinding, ...]
    outputs: tuple[OutputBinding, ...]
    views: dict[str, View]  # graph value -> its storage view
    comments: dict[str, str]  # instruction comment -> graph value (node) name
    stream: StreamPlan | None = None  # phases and image of the static weights (if any)
    memory: MemoryPlan | None = None  # which weight tiles and tables are in DRAM / flash

    def verify(self) -> None:
        """The cheap check run after every pass: the bindings and constants match the
        program's declarations."""
        for bind in self.inputs:
            self._declared(bind.decl, "input", bind.rows * bind.cols, bind.graph_input)
        for out in self.outputs:
            self._declared(out.decl, "output", math.prod(out.shape), out.value)
        for d in self.program.decls_of("const"):
            if d.name not in self.consts:
                raise CimcError(f"constant {d.name!r} is declared but has no data", "program")

    def verify_deep(self) -> None:
        """The machine's validator: operands, bounds, cross-core races (run at the end)."""
        validate(self.program, self.arch)

    def _declared(self, name: str, kind: str, elements: int, value: str) -> None:
        d = self.program.decl(name)
        if d is None or d.kind != kind or d.rows * d.cols != elements:
            raise CimcError(f"graph value {value!r} has no matching .{kind} {name!r}", "program")

    def __str__(self) -> str:
        return print_program(self.program)


def program_inputs(compiled: Compiled, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The `.input` arrays of the program for graph inputs (float inputs quantized as the
    golden does: float32 first, then clamp(rint(x / scale)) in float64)."""
    feeds: dict[str, np.ndarray] = {}
    for bind in compiled.inputs:
        if bind.graph_input not in inputs:
            raise CimcError(f"missing input {bind.graph_input!r}", "inputs")
        x = np.asarray(inputs[bind.graph_input])
        if bind.rows * bind.cols != x.size:
            raise CimcError(
                f"has {x.size} elements, expected {bind.rows}x{bind.cols}",
                f"input {bind.graph_input}",
            )
        if bind.scale is not None:
            assert bind.bits is not None
            x = qc.quantize_tensor(x.astype(np.float32), bind.scale, bind.bits)
        codes = x.astype(np.int64).reshape(bind.rows, bind.cols)
        info = np.iinfo(NP_OF[bind.dtype])
        if codes.size and (codes.min() < info.min or codes.max() > info.max):
            raise CimcError(f"values do not fit {bind.dtype}", f"input {bind.graph_input}")
        feeds[bind.decl] = codes.astype(NP_OF[bind.dtype])
    return feeds


def graph_outputs(compiled: Compiled, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The program's `.output` arrays in the graph's output shapes and dtypes."""
    return {
        o.graph_output: np.asarray(outputs[o.decl]).reshape(o.shape).astype(o.numpy_dtype)
        for o in compiled.outputs
    }


def write_compiled(compiled: Compiled, path: Path) -> tuple[Path, Path | None]:
    """Write PATH (.cimasm) and its constants PATH.safetensors (when there are any)."""
    consts_path = path.with_suffix(".safetensors")
    has = bool(compiled.consts)
    program = replace(
        compiled.program, consts_file=consts_path.name if has else None, source_name=str(path)
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(print_program(program))
        if has:
            write_consts(compiled.consts, consts_path)
    except OSError as e:
        raise CimcError(f"cannot write the program: {e.strerror or e}", str(path)) from None
    return path, consts_path if has else None
