"""How far the integer model is from the float model: cosine similarity and max error.

    report = accuracy_report(graph, qgraph, samples, per_value=True)
    print(report.format())
    report.worst(10)                    # the values that lose the most against their inputs

Each sample runs through the float reference and the integer golden; dequantized golden
values (codes * scale) are compared with the float values of the same name. Statistics
are accumulated sample by sample (dot products, norms, maxima), so a long model over many
samples costs one float run and one golden run per sample and no stored activations.
Per-value rows show where along the model precision is lost: `drop` is the cosine of a
value's worst float input minus its own (what it loses against its inputs, amplified
inherited error included), `own` the cosine of its recipe run on exact inputs
(cimc/quant/local_error.py: the error it makes by itself).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cimc.ir.graph import Graph
from cimc.quant.golden import Golden, output_scales, value_scales
from cimc.quant.local_error import OwnOutputs
from cimc.quant.scales import DATA_MOVEMENT
from cimc.reference.float_model import FloatModel


class Agreement:
    """Running agreement of a float value and its dequantized integer counterpart."""

    def __init__(self) -> None:
        self.dot = self.ref2 = self.got2 = 0.0
        self.max_error = self.max_ref = 0.0

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        r = np.asarray(ref, np.float64).ravel()
        g = np.asarray(got, np.float64).ravel()
        self.dot += float(np.dot(r, g))
        self.ref2 += float(np.dot(r, r))
        self.got2 += float(np.dot(g, g))
        self.max_error = max(self.max_error, float(np.abs(r - g).max(initial=0.0)))
        self.max_ref = max(self.max_ref, float(np.abs(r).max(initial=0.0)))

    @property
    def cosine(self) -> float:
        """Cosine similarity (1.0 when both are zero, 0.0 when one is)."""
        if self.ref2 == 0.0 and self.got2 == 0.0:
            return 1.0
        if self.ref2 == 0.0 or self.got2 == 0.0:
            return 0.0
        return self.dot / float(np.sqrt(self.ref2) * np.sqrt(self.got2))


@dataclass(frozen=True)
class ValueAccuracy:
    """Agreement of one value: cosine similarity, max |error|, the float range, and the
    cosine lost against its inputs (`drop`)."""

    name: str
    cosine: float
    max_abs_error: float
    max_abs_ref: float
    scale: float
    op: str = ""
    drop: float = 0.0
    own: float = 1.0  # cosine of its own recipe run on exact inputs (local_error.py)

    def line(self) -> str:
        rel = self.max_abs_error / self.max_abs_ref if self.max_abs_ref else 0.0
        return (
            f"{self.name:<40} cos {self.cosine:.6f}  max|err| {self.max_abs_error:.4g}  "
            f"({rel:.2%} of max|x| {self.max_abs_ref:.4g}, step {self.scale:.3g})"
        )

    def as_json(self) -> dict[str, float | str]:
        return {
            "name": self.name,
            "op": self.op,
            "cosine": self.cosine,
            "drop": self.drop,
            "own_cosine": self.own,
            "max_abs_error": self.max_abs_error,
            "max_abs_ref": self.max_abs_ref,
            "step": self.scale,
        }


@dataclass(frozen=True)
class AccuracyReport:
    outputs: list[ValueAccuracy]
    values: list[ValueAccuracy]  # graph order
    samples: int

    def min_cosine(self) -> float:
        return min((v.cosine for v in self.outputs), default=1.0)

    def worst(self, count: int | None = None) -> list[ValueAccuracy]:
        """Values that compute (not data movement), largest drop first."""
        ranked = sorted((v for v in self.values if v.op), key=lambda v: (-v.drop, v.cosine, v.name))
        return ranked if count is None else ranked[:count]

    def format(self) -> str:
        lines = [f"accuracy of the integer model vs float ({self.samples} samples)"]
        lines += ["outputs:"] + ["  " + v.line() for v in self.outputs]
        if self.values:
            lines += ["values (graph order):"] + ["  " + v.line() for v in self.values]
        return "\n".join(lines) + "\n"


def rank(rows: Sequence[ValueAccuracy]) -> list[ValueAccuracy]:
    """Rows of values that compute (not data movement), largest drop first."""
    return sorted((v for v in rows if v.op), key=lambda v: (-v.drop, v.cosine, v.name))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two flattened arrays (1.0 when both are zero)."""
    agreement = Agreement()
    agreement.add(a, b)
    return agreement.cosine


def compare(name: str, ref: np.ndarray, got: np.ndarray, scale: float) -> ValueAccuracy:
    agreement = Agreement()
    agreement.add(ref, got)
    return ValueAccuracy(name, agreement.cosine, agreement.max_error, agreement.max_ref, scale)


class ValueStats:
    """Per-value agreement of a float graph and its quantized graph, sample by sample.

    Values are matched by name (the quantizer keeps source names); values the quantizer
    added (requantized copies, smoothing) have no float counterpart and are skipped."""

    def __init__(self, graph: Graph, qgraph: Graph) -> None:
        self.graph = graph
        self.scales = value_scales(qgraph)
        self.names = [
            n.name for n in graph.nodes() if n.type.dtype.is_float and n.name in self.scales
        ]
        self.stats = {name: Agreement() for name in self.names}
        self.own_stats = {name: Agreement() for name in self.names}
        self.own = OwnOutputs(Golden(qgraph), self.scales)

    def add(self, floats: Mapping[str, np.ndarray], codes: Mapping[str, np.ndarray]) -> None:
        own = self.own.run(floats, self.names)
        for name in self.names:
            scale = self.scales[name]
            self.stats[name].add(floats[name], np.asarray(codes[name], np.float64) * scale)
            if name in own:
                self.own_stats[name].add(floats[name], own[name].astype(np.float64) * scale)

    def rows(self) -> list[ValueAccuracy]:
        return [self._row(name) for name in self.names]

    def ranked(self) -> list[ValueAccuracy]:
        """Rows of values that compute (not data movement), largest drop first."""
        return rank(self.rows())

    def _row(self, name: str) -> ValueAccuracy:
        node, a = self.graph.node(name), self.stats[name]
        computes = not isinstance(node.op, DATA_MOVEMENT)
        inputs = [self.stats[i].cosine for i in node.inputs if i in self.stats]
        drop = (min(inputs) if inputs else 1.0) - a.cosine
        op = node.op.NAME if computes else ""
        own = self.own_stats[name].cosine
        return ValueAccuracy(
            name, a.cosine, a.max_error, a.max_ref, self.scales[name], op, drop, own
        )


def accuracy_report(
    graph: Graph,
    qgraph: Graph,
    samples: Sequence[Mapping[str, np.ndarray]],
    per_value: bool = False,
) -> AccuracyReport:
    """Compare `qgraph` (dequantized golden) with `graph` (float reference) on `samples`."""
    float_model, golden = FloatModel(graph), Golden(qgraph)
    out_scales = {k: s for k, s in output_scales(qgraph).items() if s is not None}
    outs = {out: Agreement() for out in out_scales}
    values = ValueStats(graph, qgraph) if per_value else None
    for sample in samples:
        fvals = float_model.run_all(sample) if per_value else {}
        fouts = float_model.run(sample) if not per_value else _outputs_of(graph, fvals)
        result = golden.run(sample, keep_all=per_value)
        for out, scale in out_scales.items():
            outs[out].add(fouts[out], result.outputs[out].astype(np.float64) * scale)
        if values is not None:
            values.add(fvals, result.values)
    outputs = [
        ValueAccuracy(o, a.cosine, a.max_error, a.max_ref, out_scales[o]) for o, a in outs.items()
    ]
    return AccuracyReport(outputs, values.rows() if values else [], len(samples))


def _outputs_of(graph: Graph, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {out: values[name] for out, name in graph.outputs}
