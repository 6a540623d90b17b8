"""A compiled graph on disk: `NAME.cimasm` and `NAME.safetensors`, each saying what it is.

    write_compiled(compiled, Path("m.cimasm"), pipeline="idioms,...")   # both files
    saved = read_saved(Path("m.cimasm"))           # program, constants, bindings, metadata

The program's first lines record the cimc version, arch and pipeline, and its `.consts`
line the sha256 of the constants file (cimc.machine.artifact writes both atomically). The
constants file's metadata carries the same facts plus the bindings (inputs with their
scales, outputs with their shapes and scales), so a program read back runs on float inputs
and returns dequantized outputs without the graph it came from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from cimc.backend.builder.compiled import Compiled, InputBinding, OutputBinding
from cimc.errors import CimcError
from cimc.ir.graph import Graph, Node
from cimc.ir.ops_tensor import Input
from cimc.machine.artifact import write_artifact
from cimc.machine.consts_file import consts_path, load_consts_and_metadata
from cimc.machine.parser import load_program
from cimc.machine.program import Program
from cimc.quant.dialect import QEmbedding
from cimc.quant.scales import through_data_movement
from cimc.version import __version__

FORMAT = "cimc.compiled/1"  # metadata["format"]: bumped when the keys below change


@dataclass(frozen=True)
class GraphInput:
    """A graph input as the caller passes it (name, shape, numpy dtype), in graph order,
    with what it holds (cimc.ir.ops_tensor.INPUT_MEANINGS) and, for token ids, the
    vocabulary size of the table they index: what `cimc run --seed` generates from."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    meaning: str = "float"
    vocab: int | None = None

    def generate(self, rng: np.random.Generator) -> np.ndarray:
        """An input drawn as cimc.reference.float_model.default_inputs draws one."""
        dtype = np.dtype(self.dtype)
        if self.meaning == "token_ids" and self.vocab is not None:
            return rng.integers(0, self.vocab, size=self.shape).astype(dtype)
        if self.meaning == "attention_mask":
            return np.ones(self.shape, dtype)
        if self.meaning == "position_ids":
            positions = np.arange(self.shape[-1] if self.shape else 1)
            return np.broadcast_to(positions, self.shape).astype(dtype)
        if self.meaning == "token_type_ids":
            return np.zeros(self.shape, dtype)
        if dtype.kind == "f":
            return rng.standard_normal(self.shape).astype(dtype)
        if dtype.kind == "b":
            return rng.random(self.shape) < 0.5
        return rng.integers(0, 2, size=self.shape).astype(dtype)


@dataclass(frozen=True)
class Bindings:
    """How graph values bind to a program read back from disk."""

    graph_inputs: tuple[GraphInput, ...]
    inputs: tuple[InputBinding, ...]
    outputs: tuple[OutputBinding, ...]
    output_scales: dict[str, float | None]

    def dequantized(self, codes: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """codes x scale (float32) for outputs that hold codes; others as they are."""
        return {
            name: value if self.output_scales.get(name) is None
            else (value * self.output_scales[name]).astype(np.float32)
            for name, value in codes.items()
        }  # fmt: skip


@dataclass(frozen=True)
class Saved:
    """What a compiled program on disk holds (everything but the graph)."""

    program: Program
    consts: dict[str, np.ndarray]
    bindings: Bindings
    metadata: dict[str, str]


def write_compiled(
    compiled: Compiled,
    path: Path,
    pipeline: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> tuple[Path, Path]:
    """Write PATH (.cimasm) and its constants PATH.safetensors, atomically, self-described
    (`extra`: more metadata, such as how the compiled model is called)."""
    consts_file = path.with_suffix(".safetensors")
    metadata = {**compiled_metadata(compiled, pipeline), **(extra or {})}
    program = _source_named(compiled.program, path)
    write_artifact([(path, program)], compiled.consts, consts_file, metadata, header(metadata))
    return path, consts_file


def header(metadata: Mapping[str, str]) -> tuple[str, ...]:
    """The program's first comment lines (what wrote it, for whom, with which passes)."""
    return (
        f"cimc {metadata['cimc_version']}, arch {metadata['arch']}",
        f"pipeline {metadata['pipeline']}",
    )


def compiled_metadata(compiled: Compiled, pipeline: str | None) -> dict[str, str]:
    """The constants file's metadata (safetensors metadata is a str -> str map)."""
    from cimc.quant.golden import output_scales  # torch: only when writing

    graph = compiled.graph
    graph_inputs = compiled_graph_inputs(graph)
    scales = output_scales(graph)
    out_scales = {o.graph_output: scales.get(o.graph_output) for o in compiled.outputs}
    return {
        "format": FORMAT,
        "cimc_version": __version__,
        "arch": compiled.arch.name,
        "pipeline": pipeline or "(not recorded)",
        "graph_inputs": json.dumps([asdict(g) for g in graph_inputs]),
        "inputs": json.dumps([asdict(b) for b in compiled.inputs]),
        "outputs": json.dumps([asdict(b) for b in compiled.outputs]),
        "output_scales": json.dumps(out_scales),
    }


def compiled_graph_inputs(graph: Graph) -> list[GraphInput]:
    """The graph's inputs as a saved program records them (graph order)."""
    return [_graph_input_of(graph, n) for n in graph.input_nodes()]


def _graph_input_of(graph: Graph, node: Node) -> GraphInput:
    assert isinstance(node.op, Input)
    tables = [
        graph.node(user).op.plan.table.shape[0]  # type: ignore[attr-defined]
        for user, _ in through_data_movement(graph, node.name)
        if isinstance(graph.node(user).op, QEmbedding)
    ]
    dtype = np.dtype(node.type.dtype.numpy).name
    return GraphInput(node.name, node.type.shape, dtype, node.op.meaning, min(tables, default=None))


def _source_named(program: Program, path: Path) -> Program:
    return replace(program, source_name=str(path))


def read_saved(path: Path) -> Saved:
    """A program written by `write_compiled`, its constants (hash checked) and bindings."""
    program = load_program(path)
    if program.consts_file is None:
        raise CimcError(
            "this program names no constants file, so it carries no bindings; "
            "save it with cimc.compile(...).save() or cimc compile",
            program.source_name,
        )
    consts, metadata = load_consts_and_metadata(program)
    where = str(consts_path(program))
    bindings = bindings_of(metadata, where)
    if bindings is None:
        raise CimcError(
            f"the constants file was not written by this cimc (format "
            f"{metadata.get('format')!r}, expected {FORMAT!r}); recompile the model",
            where,
        )
    return Saved(program, consts, bindings, metadata)


def bindings_of(metadata: Mapping[str, str], where: str) -> Bindings | None:
    """The bindings a compiled program's constants file records (None: not a file cimc
    compiled a graph into, e.g. a hand-written program's constants)."""
    if metadata.get("format") != FORMAT:
        return None
    try:
        return Bindings(
            tuple(_graph_input(g) for g in _json(metadata, "graph_inputs")),
            tuple(InputBinding(**b) for b in _json(metadata, "inputs")),
            tuple(_output_binding(b) for b in _json(metadata, "outputs")),
            dict(_json(metadata, "output_scales")),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise CimcError(f"the constants file's metadata is incomplete ({e})", where) from None


def _graph_input(entry: dict[str, Any]) -> GraphInput:
    return GraphInput(**{**entry, "shape": tuple(entry["shape"])})


def _output_binding(entry: dict[str, Any]) -> OutputBinding:
    return OutputBinding(**{**entry, "shape": tuple(entry["shape"])})


def _json(metadata: Mapping[str, str], key: str) -> Any:
    return json.loads(metadata[key])
