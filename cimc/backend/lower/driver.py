"""The `lower` step: every value placed, every node lowered in graph order, the program built.

Each node's instructions carry its location (`%name (source)`) as their comment, so a
value, its instructions and the trace map onto each other (cimc/verify.py relies on it).
Inputs, constants and re-views only get their declaration (`DECLARED`); every other op
needs an entry in the lowering table, else "no lowering for <op> yet" at the node.

A pipeline (cimc/backend/plan/pipeline.py) lowers the graph once per micro-batch, in
micro-batch order, each node on its stage's cores and on its micro-batch's rows
(micro_store.py). Each core's stream then holds its stage's nodes for micro-batch 0, then
for micro-batch 1, ...: stage 0 goes on with micro-batch 1 while stage 1 computes
micro-batch 0, ordered only by the values passed between them. Nodes without the batch
(computed from constants alone) are lowered once.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cimc.backend.builder.asm import ProgramBuilder
from cimc.backend.builder.compiled import Compiled, InputBinding, OutputBinding
from cimc.backend.builder.values import (
    ValuePlan,
    ValueStore,
    decl_name,
    machine_dtype,
    rows_cols,
)
from cimc.backend.lower.emitter import Emitter
from cimc.backend.lower.micro_store import MicroStore
from cimc.backend.lower.movement import copy_view
from cimc.backend.lower.table import LoweringTable
from cimc.backend.plan.duplication import mapping_note
from cimc.backend.plan.from_graph import DECLARED
from cimc.backend.plan.memory import MemoryPlan
from cimc.backend.plan.pipeline import PipelinePlan
from cimc.backend.plan.sparsity import SparsityPlan
from cimc.backend.plan.streaming import StreamPlan
from cimc.backend.stream.prefetch import StreamSetup, emit_streaming
from cimc.errors import CimcError
from cimc.ir.graph import Graph, Node
from cimc.ir.ops import Input
from cimc.machine.arch import Arch
from cimc.progress import report
from cimc.quant.dialect import QQuantize


def lower_graph(
    graph: Graph,
    arch: Arch,
    values: ValuePlan,
    stream: StreamPlan | None,
    reserve: int,
    table: LoweringTable,
    memory: MemoryPlan | None = None,
    name: str = "model",
    sparsity: SparsityPlan | None = None,
    pipeline: PipelinePlan | None = None,
) -> Compiled:
    """The program of `graph` for `arch`, from its value placement, streaming plan
    (`reserve` macros per core left for run-time operands), memory plan (None: every
    constant in DRAM), sparsity plan (None: every layer dense) and pipeline (None: every
    node on all cores, once), lowered by `table`."""
    b = ProgramBuilder(arch)
    b.note(f"cimc: graph @{graph.name} for arch '{arch.name}'")
    for line in mapping_note(stream) if stream is not None else ():
        b.note(line)
    for line in pipeline.note() if pipeline is not None else ():
        b.note(line)
    store = ValueStore(graph, values, b, pipeline.micro.micro if pipeline is not None else None)
    own = sparsity.own_loads if sparsity is not None else ()
    setup = emit_streaming(b, graph, stream, reserve, memory, own)
    comments: dict[str, str] = {}
    if pipeline is None:
        em = Emitter(b, store, graph, setup, memory, sparsity)
        _lower_nodes(em, table, comments, graph.nodes(), store)
    else:
        _lower_micro_batches(b, store, setup, memory, sparsity, table, comments, pipeline)
    b.hook = None
    outputs = _bind_outputs(b, store, graph, comments)
    program, consts = b.build(f"{name}.cimasm", f"{name}.safetensors")
    inputs = _bind_inputs(graph, values.host_inputs, store)
    # a per_micro slot holds the last micro-batch's rows only: not the value to compare
    views = {name: v for name, v in store.views.items() if not store.per_micro(name)}
    return Compiled(program, consts, arch, graph, inputs, outputs, views, comments, stream, memory)


def _lower_nodes(
    em: Emitter,
    table: LoweringTable,
    comments: dict[str, str],
    nodes: list[Node],
    store: ValueStore,
    cores: Mapping[str, tuple[int, ...]] | None = None,
    declare: bool = True,
) -> None:
    """Lower `nodes` in order (each on `cores[node]`, default all) and declare the
    code-free ones (unless `declare` is off: a later micro-batch, declared already)."""
    b = em.b
    for k, node in enumerate(nodes):
        report("backend", k, len(nodes), node.name)
        comment = " ".join(node.where.split())
        comments[comment] = node.name
        if isinstance(node.op, DECLARED):
            if declare:
                with b.at(comment):
                    _declare(store, node)
            continue
        lower = table.get(type(node.op))
        if lower is None:
            raise CimcError(f"no lowering for {node.op.NAME} yet", node.where)
        group = cores[node.name] if cores is not None else b.cores
        with b.at(comment), b.on_cores(group):
            lower(em, node, node.op)
        if b.hook is not None:
            b.hook.node_done()  # the weight prefetcher may reuse the banks this node used
    report("backend", len(nodes), len(nodes))


def _lower_micro_batches(
    b: ProgramBuilder,
    store: ValueStore,
    setup: StreamSetup | None,
    memory: MemoryPlan | None,
    sparsity: SparsityPlan | None,
    table: LoweringTable,
    comments: dict[str, str],
    pipeline: PipelinePlan,
) -> None:
    micro = pipeline.micro
    cores = {name: pipeline.stages[s].cores for name, s in pipeline.stage_of().items()}
    nodes = micro.micro.nodes()
    for k in range(micro.count):
        em = Emitter(b, MicroStore(store, micro, k), micro.micro, setup, memory, sparsity)
        batched = nodes if k == 0 else [n for n in nodes if micro.carries(n.name)]
        _lower_nodes(em, table, comments, batched, store, cores, declare=k == 0)
        b.hook = None  # every resident tile is loaded by micro-batch 0's nodes


def _declare(store: ValueStore, node: Node) -> None:
    """Inputs, constants and re-views get their view now (declarations in graph order)."""
    if isinstance(node.op, Input) and node.type.dtype.is_float:
        return  # quantized on the host: the q.quantize node holds the `.input`
    store.view(node.name)


def _bind_outputs(
    b: ProgramBuilder, store: ValueStore, graph: Graph, comments: dict[str, str]
) -> tuple[OutputBinding, ...]:
    """Outputs not written in place (re-views, inputs, repeats) are copied into theirs."""
    out = []
    for oname, value in graph.outputs:
        node = graph.node(value)
        decl = store.output_decls.get(oname)
        if decl is None:
            decl = decl_name(oname)
            r, c = rows_cols(node.type.shape)
            comment = f"%{value} (output {oname})"
            comments[comment] = value
            with b.at(comment):
                target = b.output(decl, machine_dtype(node), r, c)
                copy_view(b, store.view(value), target)
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
