"""The graph -> program driver: every value placed (values.py), every node lowered in order
(by the q-op lowerings of lowerings.py and the movement ops of lower_movement.py).

    compiled = compile_graph(qgraph, load_arch("tiny"))
    write_compiled(compiled, Path("model.cimasm"))        # + model.safetensors beside it
    feeds = program_inputs(compiled, {"x": x})            # host side: q.quantize of floats
    run = run_program(compiled.program, arch, feeds, compiled.consts)
    outs = graph_outputs(compiled, run.outputs)                 # graph shapes and dtypes

Each node's instructions carry its location (`%name (source)`) as their comment, so a
value, its instructions and the trace map onto each other (cimc/verify.py relies on it).
A q-op without an instruction lowering stops with "no lowering for <op> yet" at the node.

Weights stream by the planner (cimc/backend/plan/streaming.py, emitted by prefetch.py): the
`streaming` policy decides how the macros are shared between phases of static weights:
- `sequential`: every macro serves one phase; the next phase loads when it is done;
- `double-buffer`: two banks; phase i+1 loads into one while phase i computes on the other;
- `pin-what-fits`: a pinned bank keeps the first weights resident (a caller that reuses
  the program state across runs, e.g. decode steps, loads them once), the rest streams
  double-buffered;
- `auto` (default): the plan with the best estimated makespan (ties: fewer bytes).
When all weights fit the macros every policy keeps them resident, loaded ahead of use
from the image (measured against loading each layer's tiles just in time into reused
macros: BERT-base on `large`, 4 layers, 1,211,068 cycles instead of 1,394,720; the
zoo's `tiny` configs from -10% to +1%). In every case each weight byte is loaded once per
inference, from one load-ordered image (`weights.img`). After emission, small constants
are read from a gb copy made at the start (stage_consts.py) and the remaining loads from
constants move up their streams (hoist.py), so they do not queue behind the weight stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cimc.backend.builder.alloc import NP_OF
from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.builder.values import ValueStore, decl_name, machine_dtype, plan_values, rows_cols
from cimc.backend.lower.movement import MOVEMENT, copy_view
from cimc.backend.lower.table import LOWERINGS, Emitter
from cimc.backend.plan.streaming import Policy, StreamPlan
from cimc.backend.program_passes.hoist import hoist_const_loads
from cimc.backend.program_passes.merge_sends import merge_sends
from cimc.backend.program_passes.stage_consts import stage_consts
from cimc.backend.stream.prefetch import setup_streaming
from cimc.errors import CimcError
from cimc.ir.graph import Graph, Node
from cimc.ir.ops import Constant, Input, Reshape
from cimc.machine.arch import Arch
from cimc.machine.program import Program, View
from cimc.machine.validator import validate
from cimc.progress import report
from cimc.quant import constants as qc
from cimc.quant.dialect import QConstant, QQuantize

__all__ = [  # Emitter and LOWERINGS live in lowerings.py; imported from here too
    "FREE",
    "LOWERINGS",
    "Compiled",
    "Emitter",
    "InputBinding",
    "OutputBinding",
    "compile_graph",
    "graph_outputs",
    "program_inputs",
    "write_compiled",
]

FREE = (Input, Constant, QConstant, QQuantize, Reshape)  # placed by values.py, no code


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


def compile_graph(
    graph: Graph,
    arch: Arch,
    name: str = "model",
    check: bool = True,
    streaming: Policy = "auto",
) -> Compiled:
    """Lower a quantized graph to a program for `arch` (validated unless check=False);
    `streaming` is the weight streaming policy (see the module doc)."""
    graph.verify()
    plan = plan_values(graph, arch)
    b = ProgramBuilder(arch)
    b.note(f"cimc: graph @{graph.name} for arch '{arch.name}'")
    store = ValueStore(graph, plan, b)
    stream = setup_streaming(b, graph, streaming)
    em = Emitter(b, store, graph, stream)
    comments: dict[str, str] = {}
    nodes = list(graph.nodes())
    for k, node in enumerate(nodes):
        report("backend", k, len(nodes), node.name)
        comment = " ".join(node.where.split())
        comments[comment] = node.name
        with b.at(comment):
            if isinstance(node.op, FREE):
                _declare(store, node)
                continue
            lower = LOWERINGS.get(node.op.NAME) or MOVEMENT.get(node.op.NAME)
            if lower is None:
                raise CimcError(f"no lowering for {node.op.NAME} yet", node.where)
            lower(em, node)
        if b.hook is not None:
            b.hook.node_done()  # the weight prefetcher may reuse the banks this node used
    report("backend", len(nodes), len(nodes))
    b.hook = None
    outputs = _bind_outputs(em, graph, comments)
    program, consts = b.build(f"{name}.cimasm", f"{name}.safetensors")
    program = stage_consts(program, arch)  # small constants read from gb, not behind weights
    program = hoist_const_loads(program)  # constant loads ahead of the weight stream
    program = merge_sends(program)  # runs of token sends from one core: one mcast each
    if check:
        validate(program, arch)
    inputs = _bind_inputs(graph, plan.host_inputs, store)
    splan = stream.plan if stream is not None else None
    return Compiled(
        program, consts, arch, graph, inputs, outputs, dict(store.views), comments, splan
    )


def _declare(store: ValueStore, node: Node) -> None:
    """Inputs, constants and re-views get their view now (declarations in graph order)."""
    if isinstance(node.op, Input) and node.type.dtype.is_float:
        return  # quantized on the host: the q.quantize node holds the `.input`
    store.view(node.name)


def _bind_outputs(em: Emitter, graph: Graph, comments: dict[str, str]) -> tuple[OutputBinding, ...]:
    """Outputs not written in place (re-views, inputs, repeats) are copied into theirs."""
    out = []
    for oname, value in graph.outputs:
        node = graph.node(value)
        decl = em.store.output_decls.get(oname)
        if decl is None:
            decl = decl_name(oname)
            r, c = rows_cols(node.type.shape)
            comment = f"%{value} (output {oname})"
            comments[comment] = value
            with em.b.at(comment):
                target = em.b.output(decl, machine_dtype(node), r, c)
                copy_view(em.b, em.store.view(value), target)
        numpy_dtype = np.dtype(node.type.dtype.numpy).name
        out.append(OutputBinding(decl, oname, value, node.type.shape, numpy_dtype))
    return tuple(out)


def _bind_inputs(
    graph: Graph, host: Mapping[str, str], store: ValueStore
) -> tuple[InputBinding, ...]:
    binds = []
    for node in graph.nodes():
        op = node.op
        if node.name in host and isinstance(op, QQuantize):
            source, scale, bits = host[node.name], op.scale, op.bits
        elif isinstance(op, Input) and not node.type.dtype.is_float:
            source, scale, bits = node.name, None, None
        else:
            continue
        v = store.view(node.name)
        binds.append(InputBinding(v.symbol or "", source, v.dtype, v.rows, v.cols, scale, bits))
    return tuple(binds)


# ---------------------------------------------------------------- host side of a program


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
    from safetensors.numpy import save_file

    from cimc.machine.printer import print_program

    consts_path = path.with_suffix(".safetensors")
    has = bool(compiled.consts)
    program = replace(
        compiled.program, consts_file=consts_path.name if has else None, source_name=str(path)
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(print_program(program))
        if has:
            save_file(dict(sorted(compiled.consts.items())), str(consts_path))
    except OSError as e:
        raise CimcError(f"cannot write the program: {e.strerror or e}", str(path)) from None
    return path, consts_path if has else None
