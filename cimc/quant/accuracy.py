"""How far the integer model is from the float model: cosine similarity and max error.

    report = accuracy_report(graph, qgraph, samples, per_value=True)
    print(report.format())

Each sample runs through the float reference and the integer golden; dequantized golden
values (codes * scale) are compared with the float values of the same name, over all
samples at once. Per-value rows (optional) show where along the model precision is lost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cimc.ir.graph import Graph
from cimc.quant.golden import Golden, output_scales, value_scales
from cimc.reference.float_model import FloatModel


@dataclass(frozen=True)
class ValueAccuracy:
    """Agreement of one value: cosine similarity, max |error| and the float range."""

    name: str
    cosine: float
    max_abs_error: float
    max_abs_ref: float
    scale: float

    def line(self) -> str:
        rel = self.max_abs_error / self.max_abs_ref if self.max_abs_ref else 0.0
        return (
            f"{self.name:<40} cos {self.cosine:.6f}  max|err| {self.max_abs_error:.4g}  "
            f"({rel:.2%} of max|x| {self.max_abs_ref:.4g}, step {self.scale:.3g})"
        )


@dataclass(frozen=True)
class AccuracyReport:
    outputs: list[ValueAccuracy]
    values: list[ValueAccuracy]
    samples: int

    def min_cosine(self) -> float:
        return min((v.cosine for v in self.outputs), default=1.0)

    def format(self) -> str:
        lines = [f"accuracy of the integer model vs float ({self.samples} samples)"]
        lines += ["outputs:"] + ["  " + v.line() for v in self.outputs]
        if self.values:
            lines += ["values (graph order):"] + ["  " + v.line() for v in self.values]
        return "\n".join(lines) + "\n"


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two flattened arrays (1.0 when both are zero)."""
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    if nx == 0.0 and ny == 0.0:
        return 1.0
    if nx == 0.0 or ny == 0.0:
        return 0.0
    return float(np.dot(x, y) / (nx * ny))


def compare(name: str, ref: np.ndarray, got: np.ndarray, scale: float) -> ValueAccuracy:
    err = float(np.abs(np.asarray(ref, np.float64) - got).max(initial=0.0))
    top = float(np.abs(np.asarray(ref, np.float64)).max(initial=0.0))
    return ValueAccuracy(name, cosine(ref, got), err, top, scale)


def accuracy_report(
    graph: Graph,
    qgraph: Graph,
    samples: Sequence[Mapping[str, np.ndarray]],
    per_value: bool = False,
) -> AccuracyReport:
    """Compare `qgraph` (dequantized golden) with `graph` (float reference) on `samples`."""
    float_model, golden = FloatModel(graph), Golden(qgraph)
    out_scales = output_scales(qgraph)
    scales = value_scales(qgraph) if per_value else {}
    names = [n.name for n in graph.nodes() if n.type.dtype.is_float and n.name in scales]
    ref: dict[str, list[np.ndarray]] = {}
    got: dict[str, list[np.ndarray]] = {}
    for sample in samples:
        fvals = float_model.run_all(sample) if per_value else {}
        fouts = float_model.run(sample) if not per_value else _outputs_of(graph, fvals)
        result = golden.run(sample, keep_all=per_value)
        for out, value in result.outputs.items():
            scale = out_scales[out]
            if scale is not None:
                ref.setdefault("@" + out, []).append(fouts[out])
                got.setdefault("@" + out, []).append(value.astype(np.float64) * scale)
        for name in names:
            ref.setdefault(name, []).append(fvals[name])
            got.setdefault(name, []).append(result.values[name].astype(np.float64) * scales[name])
    outputs = [
        compare(out, _cat(ref["@" + out]), _cat(got["@" + out]), s)
        for out, s in out_scales.items()
        if s is not None
    ]
    values = [compare(n, _cat(ref[n]), _cat(got[n]), scales[n]) for n in names]
    return AccuracyReport(outputs, values, len(samples))


def _outputs_of(graph: Graph, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {out: values[name] for out, name in graph.outputs}


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(p, np.float64).ravel() for p in parts])
