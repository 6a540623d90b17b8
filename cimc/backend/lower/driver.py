"""The `lower` step: every value placed, every node lowered in graph order, the program built.

Each node's instructions carry its location (`%name (source)`) as their comment, so a
value, its instructions and the trace map onto each other (cimc/verify.py relies on it).
Inputs, constants and re-views only get their declaration (`DECLARED`); every other op
needs an entry in the lowering table, else "no lowering for <op> yet" at the node.
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
from cimc.backend.lower.movement import copy_view
from cimc.backend.lower.table import LoweringTable
from cimc.backend.plan.duplication import mapping_note
from cimc.backend.plan.memory import MemoryPlan
from cimc.backend.plan.sparsity import SparsityPlan
from cimc.backend.plan.streaming import StreamPlan
from cimc.backend.stream.prefetch import emit_streaming
from cimc.errors import CimcError
from cimc.ir.graph import Graph, Node
from cimc.ir.ops import Constant, Input, Reshape
from cimc.machine.arch import Arch
from cimc.progress import report
from cimc.quant.dialect import QConstant, QQuantize

DECLARED = (Input, Constant, QConstant, QQuantize, Reshape)  # placed by values.py, no code


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
) -> Compiled:
    """The program of `graph` for `arch`, from its value placement, streaming plan
    (`reserve` macros per core left for run-time operands), memory plan (None: every
    constant in DRAM) and sparsity plan (None: every layer dense), lowered by `table`."""
    b = ProgramBuilder(arch)
    b.note(f"cimc: graph @{graph.name} for arch '{arch.name}'")
    for line in mapping_note(stream) if stream is not None else ():
        b.note(line)
    store = ValueStore(graph, values, b)
    own = sparsity.own_loads if sparsity is not None else ()
    setup = emit_streaming(b, graph, stream, reserve, memory, own)
    em = Emitter(b, store, graph, setup, memory, sparsity)
    comments: dict[str, str] = {}
    nodes = list(graph.nodes())
    for k, node in enumerate(nodes):
        report("backend", k, len(nodes), node.name)
        comment = " ".join(node.where.split())
        comments[comment] = node.name
        with b.at(comment):
            if isinstance(node.op, DECLARED):
                _declare(store, node)
                continue
            lower = table.get(type(node.op))
            if lower is None:
                raise CimcError(f"no lowering for {node.op.NAME} yet", node.where)
            lower(em, node, node.op)
        if b.hook is not None:
            b.hook.node_done()  # the weight prefetcher may reuse the banks this node used
    report("backend", len(nodes), len(nodes))
    b.hook = None
    outputs = _bind_outputs(em, graph, comments)
    program, consts = b.build(f"{name}.cimasm", f"{name}.safetensors")
    inputs = _bind_inputs(graph, values.host_inputs, store)
    views = dict(store.views)
    return Compiled(program, consts, arch, graph, inputs, outputs, views, comments, stream, memory)


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
