"""Shared pieces of the end-to-end tests: small torch models, zoo graphs, one-call verify."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import torch

from cimc.ir.graph import Graph
from cimc.machine.arch import Arch, load_arch
from cimc.pipeline import PipelineOptions, PipelineResult, compile_model
from cimc.verify import VerifyReport, verify_compiled

ARCHS = ("tiny", "default")
_ARCHS: dict[str, Arch] = {}
_GRAPHS: dict[tuple[object, ...], Graph] = {}


def arch(name: str) -> Arch:
    if name not in _ARCHS:
        _ARCHS[name] = load_arch(name)
    return _ARCHS[name]


def mlp(dims: tuple[int, ...], seed: int = 0) -> torch.nn.Module:
    """Linear layers with ReLU between them, weights from a seeded numpy generator (so the
    model is the same on every machine and torch version)."""
    rng = np.random.default_rng(seed)
    layers: list[torch.nn.Module] = []
    for k, n in zip(dims, dims[1:], strict=False):
        fc = torch.nn.Linear(k, n)
        with torch.no_grad():
            fc.weight.copy_(torch.from_numpy(rng.normal(0, k**-0.5, (n, k)).astype(np.float32)))
            fc.bias.copy_(torch.from_numpy(rng.normal(0, 0.1, n).astype(np.float32)))
        layers += [fc, torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1]).eval()


def float_input(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32)


def import_module(module: torch.nn.Module, x: np.ndarray) -> Graph:
    from cimc.api import import_model

    return import_model(module, example_inputs=(torch.from_numpy(x),))


def zoo_graph(family: str, layers: int = 1, seq_len: int = 7, preset: str = "tiny") -> Graph:
    """A random-weight HF model of the zoo, imported with torch.export (cached)."""
    key = (family, layers, seq_len, preset)
    if key not in _GRAPHS:
        from cimc.api import import_model
        from cimc.zoo import build_model, example_inputs

        depth = {"n_layer": layers} if family == "gpt2" else {"num_hidden_layers": layers}
        model = build_model(family, preset, **depth)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _GRAPHS[key] = import_model(model, example_inputs=example_inputs(model, seq_len))
    return _GRAPHS[key]


def compile_and_verify(
    graph: Graph, arch_name: str, inputs: Mapping[str, np.ndarray] | None = None
) -> tuple[PipelineResult, VerifyReport]:
    from cimc.reference.float_model import default_inputs

    result = compile_model(graph, arch(arch_name), PipelineOptions())
    feeds = dict(inputs) if inputs is not None else default_inputs(result.float_graph, seed=3)
    return result, verify_compiled(result.compiled, result.float_graph, feeds)
