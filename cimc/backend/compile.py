"""The graph -> program driver: every value placed (values.py), every node lowered in order.

    compiled = compile_graph(qgraph, load_arch("tiny"))
    write_compiled(compiled, Path("model.cimasm"))        # + model.safetensors beside it
    feeds = program_inputs(compiled, {"x": x})            # host side: q.quantize of floats
    run = run_program(compiled.program, arch, feeds, compiled.consts)
    outs = graph_outputs(compiled, run.outputs)                 # graph shapes and dtypes

Each node's instructions carry its location (`%name (source)`) as their comment, so a
value, its instructions and the trace map onto each other (cimc/verify.py relies on it).
A q-op without an instruction lowering stops with "no lowering for <op> yet" at the node.

Weights stream by the planner (cimc/backend/streaming.py, emitted by prefetch.py): the
`streaming` policy decides how the macros are shared between phases of static weights:
- `sequential`: every macro serves one phase; the next phase loads when it is done;
- `double-buffer`: two banks; phase i+1 loads into one while phase i computes on the other;
- `pin-what-fits`: a pinned bank keeps the first weights resident (a caller that reuses
  the program state across runs, e.g. decode steps, loads them once), the rest streams
  double-buffered;
- `auto` (default): the plan with the best estimated makespan (ties: fewer bytes).
When all weights fit the macros every policy keeps them resident. In every case each
weight byte is loaded once per inference, from one load-ordered image (`weights.img`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from cimc.backend.asm import ProgramBuilder
from cimc.backend.asm_alloc import NP_OF, rows
from cimc.backend.lower_attention import Heads, lower_attention
from cimc.backend.lower_elementwise import lower_add, lower_mul, lower_rescale, lower_unary
from cimc.backend.lower_embedding import lower_embedding
from cimc.backend.lower_linear import lower_linear, lower_matmul
from cimc.backend.lower_movement import MOVEMENT, copy_view, materialize
from cimc.backend.lower_norm import lower_norm
from cimc.backend.lower_rotary import lower_rotary
from cimc.backend.lower_softmax import lower_softmax
from cimc.backend.lower_tiles import TileSlot, auto_split, place_tiles
from cimc.backend.prefetch import StreamSetup, layer_image, setup_streaming
from cimc.backend.streaming import Policy, StreamPlan
from cimc.backend.values import ValueStore, decl_name, machine_dtype, plan_values, rows_cols
from cimc.errors import CimcError
from cimc.ir.graph import Graph, Node
from cimc.ir.ops import Constant, Input, Reshape
from cimc.ir.ops_quant import QConstant, QQuantize
from cimc.machine.arch import Arch
from cimc.machine.program import Program, View
from cimc.machine.validator import validate
from cimc.quant import constants as qc

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


class Emitter:
    """What a node lowering sees: the builder and the views of its operands and result."""

    def __init__(
        self, b: ProgramBuilder, store: ValueStore, graph: Graph, stream: StreamSetup | None
    ) -> None:
        self.b = b
        self.store = store
        self.graph = graph
        self.stream = stream

    def operand(self, node: Node, k: int) -> View:
        return self.store.view(node.inputs[k])

    def result(self, node: Node) -> View:
        return self.store.view(node.name)

    def broadcast(self, node: Node, k: int, shape: tuple[int, ...]) -> View:
        """Operand k as a view that broadcasts to `shape` as 1xC, Rx1, 1x1 or RxC; any
        other broadcast is materialized with strided copies first."""
        s = self._padded(node, k, shape)
        if all(d == 1 for d in s[:-1]) or s[:-1] == shape[:-1]:
            return self.operand(node, k)
        return self.expanded(node, k, (*shape[:-1], s[-1]))

    def expanded(self, node: Node, k: int, shape: tuple[int, ...]) -> View:
        """Operand k broadcast to `shape` in a scratch region of its own."""
        r, c = rows_cols(shape)
        tmp = self.b.region(None, machine_dtype(self.graph.node(node.inputs[k])), r, c)
        materialize(self.b, self.operand(node, k), self._padded(node, k, shape), tmp, shape)
        return tmp

    def _padded(self, node: Node, k: int, shape: tuple[int, ...]) -> tuple[int, ...]:
        own = self.graph.node(node.inputs[k]).type.shape
        return (1,) * (len(shape) - len(own)) + own

    def name(self, node: Node) -> str:
        """The constant-name prefix of a node (its weights become `NAME.w`, ...)."""
        return decl_name(node.name)


Lowerer = Callable[[Emitter, Node], None]


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
    for node in graph.nodes():
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
    b.hook = None
    outputs = _bind_outputs(em, graph, comments)
    program, consts = b.build(f"{name}.cimasm", f"{name}.safetensors")
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


# ---------------------------------------------------------------- q-op lowerings


def _plan(node: Node) -> Any:
    """The plan of a q-op (every q-op with a lowering holds one)."""
    return getattr(node.op, "plan")  # noqa: B009  (Op has no `plan`; its q-op subclasses do)


def _linear(em: Emitter, node: Node) -> None:
    x, y, name = em.operand(node, 0), em.result(node), em.name(node)
    if em.stream is None:
        lower_linear(em.b, x, y, _plan(node), name=name)
        return
    slots, image = em.stream.slots[node.name], layer_image(em.stream, node.name)
    lower_linear(em.b, x, y, _plan(node), slots=slots, name=name, weight_image=image)


def _matmul(em: Emitter, node: Node) -> None:
    """Batched a[..., M, K] @ b[..., K, N]: one 2-D product per batch index."""
    a_t, b_t = (em.graph.node(i).type.shape for i in node.inputs)
    m, k = a_t[-2], a_t[-1]
    batch = int(np.prod(node.type.shape[:-2], dtype=np.int64))
    b_batch = int(np.prod(b_t[:-2], dtype=np.int64))
    if int(np.prod(a_t[:-2], dtype=np.int64)) != batch or b_batch not in (1, batch):
        raise CimcError("q.matmul broadcasts only the right operand's batch of 1", node.where)
    a, bm, y = em.operand(node, 0), em.operand(node, 1), em.result(node)
    slots = _dynamic_slots(em, rows(a, 0, m), k, b_t[-1])
    for i in range(batch):
        j = i if b_batch > 1 else 0
        lower_matmul(
            em.b,
            rows(a, i * m, (i + 1) * m),
            rows(bm, j * k, (j + 1) * k),
            rows(y, i * m, (i + 1) * m),
            _plan(node),
            slots=slots,
            name=em.name(node),
        )


def _dynamic_slots(em: Emitter, a: View, k: int, n: int) -> tuple[TileSlot, ...] | None:
    """Run-time operands take the macros the streaming plan left free (None: any macro)."""
    pool = em.stream.reserved if em.stream is not None else ()
    if not pool:
        return None
    slots = place_tiles(em.b, k, n, split=auto_split(em.b, a, n))
    return tuple(replace(s, macro=pool[s.macro % len(pool)]) for s in slots)


def _binary(function: Callable[..., None]) -> Lowerer:
    """add / mul: the full-shape operand first, the other as a 2-D broadcast."""

    def lower(em: Emitter, node: Node) -> None:
        shapes = [em.graph.node(i).type.shape for i in node.inputs]
        plan = _plan(node)
        first = 1 if shapes[0] != node.type.shape and shapes[1] == node.type.shape else 0
        if first == 1 and function is lower_add:  # a*Ma + b*Mb is symmetric
            plan = replace(plan, mult_a=plan.mult_b, mult_b=plan.mult_a)
        full = em.operand(node, first)
        if shapes[first] != node.type.shape:
            full = em.expanded(node, first, node.type.shape)
        other = em.broadcast(node, 1 - first, node.type.shape)
        function(em.b, full, other, em.result(node), plan)

    return lower


def _requant(em: Emitter, node: Node) -> None:
    from cimc.quant.plans import RescalePlan

    lower_rescale(em.b, em.operand(node, 0), em.result(node), RescalePlan(_plan(node)))


def _lut(em: Emitter, node: Node) -> None:
    name = f"{em.name(node)}.lut"
    lower_unary(em.b, em.operand(node, 0), em.result(node), _plan(node), name=name)


def _norm(em: Emitter, node: Node) -> None:
    lower_norm(em.b, em.operand(node, 0), em.result(node), _plan(node), name=em.name(node))


def _embedding(em: Emitter, node: Node) -> None:
    lower_embedding(em.b, em.operand(node, 0), em.result(node), _plan(node), name=em.name(node))


def _softmax(em: Emitter, node: Node) -> None:
    mask = em.broadcast(node, 1, node.type.shape) if len(node.inputs) > 1 else None
    lower_softmax(
        em.b, em.operand(node, 0), em.result(node), _plan(node), mask=mask, name=em.name(node)
    )


def _attention(em: Emitter, node: Node) -> None:
    """Operands [B, H, S, D] are stored head-major: [B*H*S x D] views."""

    def heads(view: View, shape: tuple[int, ...]) -> Heads:
        return Heads(view, shape[0], shape[1], shape[2], shape[3], head_major=True)

    q, k, v = (
        heads(em.operand(node, i), em.graph.node(node.inputs[i]).type.shape) for i in range(3)
    )
    mask = None
    if len(node.inputs) == 4:
        mask = _attention_mask(em, node, q.batch, q.seq, k.seq)
    out = heads(em.result(node), node.type.shape)
    macros = em.stream.reserved if em.stream is not None and em.stream.reserved else None
    lower_attention(em.b, q, k, v, out, _plan(node), mask=mask, name=em.name(node), macros=macros)


def _attention_mask(em: Emitter, node: Node, batch: int, sq: int, sk: int) -> View:
    """The bool mask as [B x Sk] (same for every head and query) or [B*Sq x Sk]."""
    shape = em.graph.node(node.inputs[3]).type.shape
    m = (1,) * (4 - len(shape)) + shape
    view = em.operand(node, 3)
    if m[1] == 1 and m[0] == batch and m[2] in (1, sq) and m[3] == sk:
        return view
    raise CimcError(
        f"attention mask of shape {list(shape)} is not [B, 1, 1 or Sq, Sk]; per-head masks "
        "have no lowering yet",
        node.where,
    )


def _rotary(em: Emitter, node: Node) -> None:
    """[B, H, S, D] values are head-major views; other ranks go as plain views."""
    x, y = em.operand(node, 0), em.result(node)
    if len(node.type.shape) == 4:
        bt, h, s, d = node.type.shape
        x, y = Heads(x, bt, h, s, d, head_major=True), Heads(y, bt, h, s, d, head_major=True)  # type: ignore[assignment]
    lower_rotary(em.b, x, y, _table_plan(node), name=em.name(node))


def _table_plan(node: Node) -> Any:
    """The rotary plan with [S, D] tables: exporters may give [1, 1, S, D] (same values)."""
    plan = _plan(node)
    cos, sin = plan.cos, plan.sin
    if cos.ndim > 2 and all(d == 1 for d in cos.shape[:-2] + sin.shape[:-2]):
        return replace(plan, cos=cos.reshape(cos.shape[-2:]), sin=sin.reshape(sin.shape[-2:]))
    if cos.ndim != 2:
        raise CimcError(f"rotary tables of shape {list(cos.shape)} are not [S, D]", node.where)
    return plan


LOWERINGS: dict[str, Lowerer] = {
    "q.linear": _linear,
    "q.matmul": _matmul,
    "q.add": _binary(lower_add),
    "q.mul": _binary(lower_mul),
    "q.requant": _requant,
    "q.lut": _lut,
    "q.layer_norm": _norm,
    "q.rms_norm": _norm,
    "q.softmax": _softmax,
    "q.attention": _attention,
    "q.embedding": _embedding,
    "q.rotary": _rotary,
}
