"""`cimc.compile` and `cimc.load`: a model in, a compiled model out.

    model = cimc.compile(module, example_inputs=(ids, mask), arch="tiny")
    logits = model.run(ids, mask)          # float tensors in, dequantized tensors out
    model.verify(ids, mask).bit_exact      # interpreter == integer golden, bit for bit
    model.report().makespan_cycles         # the schedule's figures
    model.save("out/gpt2.cimasm")          # + out/gpt2.safetensors
    model = cimc.load("out/gpt2.cimasm")   # runs and reports again, without the graph

`run` quantizes float inputs on the host exactly as the integer golden does, runs the
program on the bit-exact interpreter and dequantizes the outputs (code x scale), placed
in the structure the source returns (torch.export's output tree for torch sources).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cimc.backend.builder.compiled import (
    InputBinding,
    OutputBinding,
    bound_inputs,
    bound_outputs,
)
from cimc.backend.builder.saved import read_saved, write_compiled
from cimc.errors import CimcError
from cimc.machine.arch import Arch, load_arch
from cimc.machine.interpreter import run_program
from cimc.machine.program import Program
from cimc.pipeline import PipelineOptions, PipelineResult, compile_model
from cimc.signature import (
    Signature,
    export_signature,
    graph_signature,
    signature_from_metadata,
    to_numpy,
)

if TYPE_CHECKING:
    from cimc.machine.summary import CostSummary
    from cimc.verify import VerifyReport


@dataclass(frozen=True)
class Runnable:
    """What running needs: the program, its constants and how graph values bind to it."""

    program: Program
    consts: dict[str, np.ndarray]
    arch: Arch
    inputs: tuple[InputBinding, ...]
    outputs: tuple[OutputBinding, ...]
    output_scales: dict[str, float | None]


class CompiledModel:
    """A compiled model: run it, verify it, report its cost, save it."""

    def __init__(
        self,
        runnable: Runnable,
        signature: Signature,
        pipeline: str,
        result: PipelineResult | None = None,
    ) -> None:
        self.runnable = runnable
        self.signature = signature
        self.pipeline = pipeline
        self.result = result  # None for a model read back by cimc.load: no graph

    @property
    def program(self) -> Program:
        return self.runnable.program

    @property
    def arch(self) -> Arch:
        return self.runnable.arch

    def __repr__(self) -> str:
        count = sum(len(s.instrs) for s in self.program.cores)
        return f"<CompiledModel {count} instructions on '{self.arch.name}'>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.run(*args, **kwargs)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Dequantized outputs of the program on these inputs, structured as the source's
        (torch tensors when any input is one, numpy arrays otherwise)."""
        values = self.signature.bind(args, kwargs)
        codes = self.codes_of(values)
        real = self._dequantized(codes)
        as_torch = any(hasattr(v, "detach") for v in values.values())
        return self.signature.structure({k: _tensor(v, as_torch) for k, v in real.items()})

    def codes(self, *args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        """The raw output codes by graph output name, in the graph's shapes."""
        return self.codes_of(self.signature.bind(args, kwargs))

    def codes_of(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        r = self.runnable
        feeds = bound_inputs(r.inputs, {k: to_numpy(v) for k, v in inputs.items()})
        run = run_program(r.program, r.arch, feeds, r.consts)
        return bound_outputs(r.outputs, run.outputs)

    def _dequantized(self, codes: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        scales = self.runnable.output_scales
        return {
            name: value if scales.get(name) is None else (value * scales[name]).astype(np.float32)
            for name, value in codes.items()
        }

    def verify(self, *args: Any, **kwargs: Any) -> VerifyReport:
        """Interpreter vs integer golden on these inputs (bit for bit), accuracy vs float."""
        from cimc.verify import verify_compiled

        if self.result is None:
            raise CimcError(
                "a model read back by cimc.load has no graph to verify against; verify the "
                "model cimc.compile returns, or run `cimc verify MODEL`",
                "verify",
            )
        values = self.signature.bind(args, kwargs)
        inputs = {k: to_numpy(v) for k, v in values.items()}
        return verify_compiled(self.result.compiled, self.result.float_graph, inputs)

    def report(self) -> CostSummary:
        """Cycles, energy, utilization and traffic from the schedule simulation."""
        from cimc.machine.summary import summarize

        return summarize(self.program, self.arch)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write PATH (.cimasm) and PATH.safetensors, atomically; `cimc.load` reads them."""
        out = Path(path)
        if out.suffix != ".cimasm":
            raise CimcError("the program's file name must end in .cimasm", str(out))
        if self.result is None:
            raise CimcError("save the model cimc.compile returned (this one was loaded)", str(out))
        write_compiled(self.result.compiled, out, self.pipeline, self.signature.as_metadata())
        return out


def compile(  # noqa: A001 - the public name, as torch.compile
    model: Any,
    *,
    example_inputs: Any = None,
    arch: str | Arch = "default",
    seq_len: int | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    calibration: str | os.PathLike[str] | None = None,
    **options: Any,
) -> CompiledModel:
    """Compile a model file (.onnx, .pt2), nn.Module, ExportedProgram or fx.GraphModule.

    Modules are exported with torch.export.export(module, example_inputs) (a tensor, a
    tuple of tensors or a dict of keyword tensors). `arch` is a preset name, a TOML file
    or an Arch; `options` are fields of cimc.pipeline.PipelineOptions (`pipeline`,
    `streaming`, `validate_each`, `time_passes`, ...).
    """
    target = arch if isinstance(arch, Arch) else load_arch(str(arch))
    opts = _options(seq_len, shapes, calibration, options)
    source, program = _source(model, example_inputs)
    result = compile_model(source, target, opts)
    signature = _signature(program, result)
    r = result.compiled
    from cimc.quant.golden import output_scales

    scales = output_scales(r.graph)
    runnable = Runnable(r.program, r.consts, r.arch, r.inputs, r.outputs, scales)
    return CompiledModel(runnable, signature, opts.pipeline, result)


def load(path: str | os.PathLike[str]) -> CompiledModel:
    """A model saved by CompiledModel.save or `cimc compile` (the constants' hash checked)."""
    saved = read_saved(Path(path))
    arch = load_arch(saved.program.arch_name)
    b = saved.bindings
    runnable = Runnable(saved.program, saved.consts, arch, b.inputs, b.outputs, b.output_scales)
    outputs = tuple(o.graph_output for o in b.outputs)
    signature = signature_from_metadata(saved.metadata) or graph_signature(
        [g.name for g in b.graph_inputs], outputs
    )
    return CompiledModel(runnable, signature, saved.metadata.get("pipeline", ""))


_OPTION_NAMES = tuple(
    f.name for f in fields(PipelineOptions) if f.name not in ("seq_len", "shapes", "calibration")
)


def _options(
    seq_len: int | None,
    shapes: Mapping[str, Sequence[int]] | None,
    calibration: str | os.PathLike[str] | None,
    options: Mapping[str, Any],
) -> PipelineOptions:
    unknown = sorted(set(options) - set(_OPTION_NAMES))
    if unknown:
        raise CimcError(
            f"unknown options {unknown}; cimc.compile takes {', '.join(_OPTION_NAMES)}",
            "cimc.compile",
        )
    return PipelineOptions(
        seq_len=seq_len,
        shapes=dict(shapes or {}),
        calibration=None if calibration is None else os.fspath(calibration),
        **options,
    )


def _source(model: Any, example_inputs: Any) -> tuple[Any, Any]:
    """What compile_model takes, and the ExportedProgram it comes from (torch sources):
    a module is exported here so that its input and output trees are known."""
    if isinstance(model, str | os.PathLike):
        if Path(model).suffix.lower() != ".pt2":
            if example_inputs is not None:
                raise CimcError(
                    "example_inputs are for torch modules; bind an ONNX model's shapes with "
                    "seq_len= or shapes=",
                    str(model),
                )
            return model, None
        from cimc.importers.torch_load import load_pt2

        program = load_pt2(os.fspath(model))
        return program, program
    import torch

    if isinstance(model, torch.export.ExportedProgram):
        return model, model
    if isinstance(model, torch.nn.Module):
        from cimc.importers.torch_load import describe, export_module

        program = export_module(model, example_inputs, describe(model))
        return program, program
    raise CimcError(
        f"cannot compile a {type(model).__name__}; pass a path (.onnx, .pt2), an nn.Module, "
        "an ExportedProgram or an fx.GraphModule",
        "cimc.compile",
    )


def _signature(program: Any, result: PipelineResult) -> Signature:
    graph = result.float_graph
    inputs = [n.name for n in graph.input_nodes()]
    outputs = [name for name, _ in graph.outputs]
    if program is None:
        return graph_signature(inputs, outputs)
    return export_signature(program, inputs, outputs)


def _tensor(value: np.ndarray, as_torch: bool) -> Any:
    if not as_torch:
        return value
    import torch

    return torch.from_numpy(np.ascontiguousarray(value))
