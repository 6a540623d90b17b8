"""Prefill and decode programs of a decoder model, sharing one constants file.

    progs = build_decoder("gpt2.onnx", load_arch("tiny"), prompt_len=5, capacity=13)
    session = DecoderSession(progs)
    logits = session.run(progs.prefill, ids=[1, 2, 3, 4, 5], start=0)   # [5, vocab] codes
    logits = session.run(progs.decode, ids=[tok], start=5)              # [1, vocab]

One integer graph at capacity C (the export's symbolic sequence axis bound to C, quantized
once: per-tensor scales do not depend on the length), specialized to P rows (prefill) and
one row (decode) by cimc/decode/specialize.py. Program interface: inputs `input_ids`
[1, n] and `cache_position` [1, n] (int64: the positions of the rows), `attention_mask`
[1, C] over cache slots when the model takes one; `.state` KV caches (cimc/decode/lower.py);
output the logits codes of the n rows.

A batch of S sequences (`prompt_len` a list of S prompt lengths) packs their rows: prefill
computes every prompt row (sequence after sequence), a decode step one row per sequence;
every weight is loaded once per run for all of them, each sequence has its own KV cache
and its positions. Decode steps run the program of their attention windows
(cimc/decode/variants.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cimc.backend.builder.compiled import Compiled, graph_outputs, program_inputs
from cimc.backend.builder.footprint import dram_need
from cimc.backend.builder.values import plan_values
from cimc.backend.plan.streaming import Policy
from cimc.backend.stages.planning import PlanMemory
from cimc.decode.axes import SeqAxes, probe_axes
from cimc.decode.lower import DECODE_LOWERINGS
from cimc.decode.ops import DecodeAttention
from cimc.decode.specialize import POSITIONS, BatchShape, check_decoder, specialize
from cimc.decode.variants import DEFAULT_BLOCK, DecodeVariants, Variant, variant_of, window
from cimc.decode.warm import WarmDecode
from cimc.errors import CimcError
from cimc.ir.graph import Graph
from cimc.machine.arch import Arch
from cimc.machine.interpreter import MacroCells, RunResult, run_program
from cimc.machine.program import Decl, Program
from cimc.passes.manager import Pass, Step, verify_deep
from cimc.passes.predict_sparsity import PredictSparsity
from cimc.passes.quantize import Quantize
from cimc.pipeline import (
    PipelineOptions,
    configurer,
    load_model,
    manager,
    pipeline_stages,
    with_weight_options,
)
from cimc.quant.dialect import QEmbedding
from cimc.quant.smooth import inserted_sites
from cimc.version import __version__

MIN_PROBE = 2  # at one position exporters simplify rotary away: never probe there


@dataclass(frozen=True)
class DecoderModel:
    """The capacity-C graphs and where their sequence axes are."""

    capacity: int
    float_graph: Graph  # accuracy reference
    qgraph: Graph  # the integer model: golden reference, source of both programs
    axes: SeqAxes
    token_input: str
    mask_input: str | None
    vocab: int


@dataclass(frozen=True)
class DecoderPrograms:
    model: DecoderModel
    prefill: Compiled
    decode: Compiled
    consts: dict[str, np.ndarray]  # the union of both programs' constants
    warm: WarmDecode | None = None  # decode with weights kept in the macros between tokens
    variants: DecodeVariants | None = None  # decode programs by attention window

    @property
    def prompt_lens(self) -> tuple[int, ...]:
        return batch_shape(self.prefill.graph).segments

    @property
    def sequences(self) -> int:
        return len(self.prompt_lens)

    def decode_variant(self, positions: Sequence[int]) -> Variant:
        """The decode program (and its warm form) for rows at `positions`, one per
        sequence: the full-capacity one, or the one of their attention windows."""
        if self.variants is None:
            return Variant(self.decode, self.warm)
        return self.variants.get(self.variants.windows(positions))

    @property
    def states(self) -> tuple[Decl, ...]:
        return self.decode.program.decls_of("state")


def quantized_graphs(
    model: Any,
    options: PipelineOptions,
    seq_len: int,
    probe: bool = False,
    smooth_sites: Sequence[str] = (),
) -> tuple[Graph, Graph]:
    """(float graph, integer graph) of `model` imported at `seq_len`: the pipeline's parts
    before its backend. A `probe` only serves its shapes: generated calibration data, no
    note about it, and the outlier smoothing of the real graph (`smooth_sites`), whatever
    its own statistics, so that both have the same structure."""
    graph = load_model(model, replace(options, seq_len=seq_len))
    stages = pipeline_stages(options, _calibrated(options, probe, smooth_sites))
    float_graph = manager(stages.float, options).run(graph.copy())
    return float_graph, manager(stages.quantized, options).run(float_graph.copy())


def _calibrated(
    options: PipelineOptions, probe: bool, smooth_sites: Sequence[str]
) -> Callable[[Pass], Pass]:
    def configure(p: Pass) -> Pass:
        if not isinstance(p, Quantize):
            return p
        p = with_weight_options(p, options)
        if probe:
            sites = "+".join(smooth_sites) or "none"
            return replace(p, quiet=True, calibration="", smooth_sites=sites)
        return replace(p, calibration=options.calibration or p.calibration)

    return configure


def compile_decoder_graph(
    graph: Graph,
    arch: Arch,
    name: str,
    options: PipelineOptions | None = None,
    streaming: Policy | None = None,
    dram_reserve: int = 0,
) -> Compiled:
    """A row-specialized graph through the pipeline's backend part, lowered with the
    decode ops' lowerings; `dram_reserve`: DRAM the memory plan keeps for other data at
    least (see `shared_reserve`)."""
    options = replace(options or PipelineOptions(), streaming=streaming)
    base = configurer(arch, options, name, table=DECODE_LOWERINGS)

    def configure(p: Pass) -> Pass:
        p = base(p)
        return replace(p, reserve=dram_reserve) if isinstance(p, PlanMemory) else p

    backend = pipeline_stages(options, configure).backend
    compiled: Compiled = manager(backend, options).run(graph)
    verify_deep(compiled)
    return compiled


def load_decoder(model: Any, capacity: int, options: PipelineOptions | None = None) -> DecoderModel:
    """Import and quantize at `capacity`, find the sequence axes by a probe at C-1."""
    options = options or PipelineOptions()
    if capacity < MIN_PROBE + 1:
        raise CimcError(f"the capacity must be at least {MIN_PROBE + 1} positions", "decode")
    plain = replace(options, sparsity=None)  # the predictors come after the probe
    float_graph, qgraph = quantized_graphs(model, plain, capacity)
    sites = inserted_sites(qgraph, float_graph)
    _, probe = quantized_graphs(model, plain, capacity - 1, probe=True, smooth_sites=sites)
    axes = probe_axes(qgraph, probe, capacity, capacity - 1)
    if options.sparsity == "predict":
        qgraph, axes = with_predictors(qgraph, axes, options)
    check_decoder(qgraph, axes)
    token, mask = _inputs(qgraph, axes)
    vocab = _vocab(qgraph, token)
    return DecoderModel(capacity, float_graph, qgraph, axes, token, mask, vocab)


def with_predictors(
    qgraph: Graph, axes: SeqAxes, options: PipelineOptions
) -> tuple[Graph, SeqAxes]:
    """The integer graph with its sparsity predictors (fitted once, at capacity) and the
    sequence axes of their values: those of the up-projection input they read (a
    predictor keeps the token axes and maps only the last one)."""
    step = PredictSparsity(calibration=options.calibration or "")
    predicted = manager([Step(step)], options).run(qgraph)
    token = dict(axes.token)
    for node in predicted.nodes():
        if node.name not in token and node.inputs and node.inputs[0] in token:
            token[node.name] = token[node.inputs[0]]
    return predicted, replace(axes, token=token)


def _inputs(graph: Graph, axes: SeqAxes) -> tuple[str, str | None]:
    """The token-ids input and the optional attention-mask input (nothing else)."""
    token = mask = None
    for node in graph.input_nodes():
        meaning = getattr(node.op, "meaning", "")
        if meaning == "token_ids" and node.name in axes.token and token is None:
            token = node.name
        elif meaning == "attention_mask" and node.name in axes.key and mask is None:
            mask = node.name
        else:
            raise CimcError(
                f"input {node.name!r} ({meaning}) is not token ids or an attention mask; "
                "decode supports models taking (input_ids[, attention_mask])",
                "decode",
            )
    if token is None:
        raise CimcError("the model has no token-ids input with a sequence axis", "decode")
    if graph.node(token).type.shape[0] != 1:
        raise CimcError("decode runs batch 1 (bind the batch axis to 1)", "decode")
    return token, mask


def _vocab(graph: Graph, token: str) -> int:
    ops = [graph.node(u).op for u in graph.users(token)]
    tables = [op.plan.table.shape[0] for op in ops if isinstance(op, QEmbedding)]
    if not tables:
        raise CimcError("the token ids feed no embedding table", "decode")
    return int(min(tables))


def build_decoder(
    model: Any,
    arch: Arch,
    prompt_len: int | Sequence[int],
    capacity: int,
    options: PipelineOptions | None = None,
    loaded: DecoderModel | None = None,
    streaming: Policy = "auto",
    keep_weights: bool = True,
    block: int = DEFAULT_BLOCK,
) -> DecoderPrograms:
    """Prefill (the prompts' rows) and decode (one row per sequence) programs sharing
    constants and KV caches; `prompt_len`: one length, or one per sequence of a batch;
    `streaming` is the backend's weight streaming policy for both; with `keep_weights`,
    decode steps after the first skip the loads of weights that stay in the macros;
    `block`: the attention window granularity of decode steps (0: the whole capacity)."""
    dm = loaded or load_decoder(model, capacity, options)
    lens = (prompt_len,) if isinstance(prompt_len, int) else tuple(prompt_len)
    if not lens or not all(1 <= p < dm.capacity for p in lens):
        raise CimcError(
            f"a prompt of {max(lens, default=0)} tokens leaves no room to decode in a "
            f"capacity of {dm.capacity} positions; raise --max-positions",
            "decode",
        )
    stem = Path(str(model)).stem if isinstance(model, str | Path) else "model"
    cap = dm.capacity
    pre_shape = BatchShape(lens, tuple(window(p - 1, block, cap) for p in lens))
    prefill_graph = specialize(dm.qgraph, dm.axes, sum(lens), pre_shape)
    one_row = specialize(
        dm.qgraph, dm.axes, len(lens), BatchShape((1,) * len(lens), (cap,) * len(lens))
    )
    reserve = shared_reserve((prefill_graph, one_row), arch)
    options = options or PipelineOptions()
    # one row per sequence: `duplicate` would have no rows to split at batch 1, so the
    # decode programs price copies (auto) where prefill takes them as asked
    stepping = replace(options, mapping="auto") if options.mapping == "duplicate" else options
    decode = compile_decoder_graph(one_row, arch, f"{stem}.decode", stepping, streaming, reserve)
    policy = decode.stream.policy if decode.stream is not None else streaming
    prefill = compile_decoder_graph(
        prefill_graph, arch, f"{stem}.prefill", options, policy, reserve
    )
    consts = merge_consts(prefill.consts, decode.consts)
    _same_states(prefill, decode)
    full = variant_of(decode, keep_weights)

    def compile_window(graph: Graph) -> Compiled:
        name = f"{stem}.decode-w" + "-".join(map(str, batch_shape(graph).windows))
        compiled = compile_decoder_graph(graph, arch, name, stepping, policy, reserve)
        consts.update(merge_consts(consts, compiled.consts))  # the same tensors, or an error
        return compiled

    variants = None
    if block > 0:
        variants = DecodeVariants(
            dm.qgraph, dm.axes, len(lens), block, compile_window, keep_weights
        )
        variants.cache[(cap,) * len(lens)] = full
    return DecoderPrograms(dm, prefill, decode, consts, full.warm, variants)


def batch_shape(graph: Graph) -> BatchShape:
    """Rows per sequence and attention windows of a row-specialized graph."""
    for node in graph.nodes():
        op = node.op
        if isinstance(op, DecodeAttention):
            rows = node.type.shape[2]
            return BatchShape(op.rows_of(rows), op.windows_of(rows))
    raise CimcError("the graph has no decode attention", "decode")


def shared_reserve(graphs: Sequence[Graph], arch: Arch) -> int:
    """The DRAM the programs of `graphs` need besides their shared weights, at most: each
    is planned with it (and with decode's streaming policy), so their memory plans, and
    the weight images in DRAM and flash, are the same."""
    return max(dram_need(g, plan_values(g, arch)).other for g in graphs)


def merge_consts(*parts: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One constants file for several programs: a shared name must hold the same tensor."""
    merged: dict[str, np.ndarray] = {}
    for part in parts:
        for name, value in part.items():
            old = merged.get(name)
            if old is not None and (old.dtype != value.dtype or not np.array_equal(old, value)):
                raise CimcError(f"constant {name!r} differs between the programs", "decode")
            merged[name] = value
    return dict(sorted(merged.items()))


def _same_states(a: Compiled, b: Compiled) -> None:
    def key(c: Compiled) -> list[tuple[str, str | None, int, int]]:
        return [(d.name, d.dtype, d.rows, d.cols) for d in c.program.decls_of("state")]

    if key(a) != key(b):
        raise CimcError("prefill and decode declare different KV caches", "decode")


@dataclass
class DecoderSession:
    """Runs the programs in the interpreter, carrying the KV caches between runs."""

    programs: DecoderPrograms
    state: dict[str, np.ndarray] = field(default_factory=dict)
    macros: dict[tuple[int, int], MacroCells] = field(default_factory=dict)
    last: RunResult | None = None
    _located: dict[int, tuple[Program, Program]] = field(default_factory=dict)

    def run(
        self, compiled: Compiled, ids: Sequence[int], start: int, program: Program | None = None
    ) -> np.ndarray:
        """Logits codes [n, vocab] of tokens `ids` at positions start..start+n-1; `program`
        replaces the compiled one (e.g. the warm decode program)."""
        return self.run_rows(compiled, ids, range(start, start + len(ids)), program)

    def run_rows(
        self,
        compiled: Compiled,
        ids: Sequence[int],
        positions: Sequence[int],
        program: Program | None = None,
    ) -> np.ndarray:
        """Logits codes [n, vocab] of rows `ids` at `positions` (each row of the sequence
        the program's batch shape gives it)."""
        dm = self.programs.model
        feeds = rows_inputs(dm, ids, positions)
        check_windows(batch_shape(compiled.graph), positions)
        inputs = program_inputs(compiled, feeds)
        located = self._program(compiled, program or compiled.program)
        kept = {(p.core, p.macro) for p in located.persists}
        macros = {key: cells for key, cells in self.macros.items() if key in kept}
        run = run_program(
            located, compiled.arch, inputs, self.programs.consts, state=self.state, macros=macros
        )
        self.state, self.last = run.state, run
        self.macros.update(run.macros)
        (logits,) = graph_outputs(compiled, run.outputs).values()
        return logits.reshape(len(ids), -1)

    def _program(self, compiled: Compiled, program: Program) -> Program:
        """The program with line numbers (run-time errors name FILE:LINE:COL)."""
        from cimc.verify import located_program

        key = id(program)  # the program is kept beside its located copy: ids stay unique
        if key not in self._located:
            self._located[key] = (program, located_program(compiled, program))
        return self._located[key][1]


def step_inputs(dm: DecoderModel, ids: Sequence[int], start: int) -> dict[str, np.ndarray]:
    """Program inputs of tokens `ids` at positions start.. (checked against the model)."""
    return rows_inputs(dm, ids, range(start, start + len(ids)))


def rows_inputs(
    dm: DecoderModel, ids: Sequence[int], positions: Sequence[int]
) -> dict[str, np.ndarray]:
    """Program inputs of rows `ids` at `positions` (checked against the model)."""
    n = len(ids)
    if len(positions) != n:
        raise CimcError(f"{len(positions)} positions for {n} rows", "decode")
    if any(not 0 <= int(p) < dm.capacity for p in positions):
        raise CimcError(
            f"positions {min(positions)}..{max(positions)} are beyond the compiled capacity "
            f"of {dm.capacity} positions (0..{dm.capacity - 1}); compile with a larger "
            "--max-positions",
            "decode",
        )
    check_ids(ids, dm.vocab)
    feeds = {
        dm.token_input: np.asarray(ids, np.int64).reshape(1, n),
        POSITIONS: np.asarray(positions, np.int64).reshape(1, n),
    }
    if dm.mask_input is not None:
        feeds[dm.mask_input] = np.ones((1, dm.capacity), np.int64)
    return feeds


def check_windows(shape: BatchShape, positions: Sequence[int]) -> None:
    """Every row's position inside its sequence's attention window (the program does not
    read the cache beyond it)."""
    if len(positions) != shape.rows:
        raise CimcError(f"the program computes {shape.rows} rows, got {len(positions)}", "decode")
    for s, (r0, rows, w) in enumerate(
        zip(shape.starts(), shape.segments, shape.windows, strict=True)
    ):
        late = [int(p) for p in positions[r0 : r0 + rows] if int(p) >= w]
        if late:
            raise CimcError(
                f"position {late[0]} of sequence {s} is beyond the program's attention "
                f"window of {w} slots; run the program of a larger window",
                "decode",
            )


def check_ids(ids: Sequence[int], vocab: int) -> None:
    bad = [int(i) for i in ids if not 0 <= int(i) < vocab]
    if bad:
        raise CimcError(
            f"token id {bad[0]} is outside the vocabulary 0..{vocab - 1}", "--prompt-ids"
        )


def write_programs(progs: DecoderPrograms, out_dir: Path, stem: str) -> tuple[Path, ...]:
    """DIR/STEM.prefill.cimasm, DIR/STEM.decode.cimasm (and STEM.decode-warm.cimasm when
    weights stay in the macros), sharing one DIR/STEM.safetensors."""
    from cimc.machine.artifact import write_artifact

    consts = out_dir / f"{stem}.safetensors"
    cold = progs.warm.cold if progs.warm is not None else progs.decode.program
    programs = [("prefill", progs.prefill.program), ("decode", cold)]
    if progs.warm is not None:
        programs.append(("decode-warm", progs.warm.warm))
    written = []
    for kind, base in programs:
        path = out_dir / f"{stem}.{kind}.cimasm"
        written.append((path, replace(base, source_name=str(path))))
    arch = progs.prefill.program.arch_name
    metadata = {"format": "cimc.decoder/1", "cimc_version": __version__, "arch": arch}
    header = [f"cimc {__version__}, arch {arch}, {stem} decoder"]
    write_artifact(written, progs.consts, consts, metadata, header)
    return (*(p for p, _ in written), consts)
