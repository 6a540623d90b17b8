"""Outlier smoothing (SmoothQuant) folded into the weights: exact in float, kind to int8.

A normalization whose output has a few huge channels (realistic LLM statistics) wastes
the int8 codes of its per-tensor scale on them. When every reader of the norm output is
a linear layer, divide gamma (and beta) by s[c] and multiply row c of each reader's
weight by s[c]: the float model is unchanged, the activation's channels are evened out,
and the per-output-channel weight quantization absorbs the difference.
s[c] = max|x_c|^alpha / max|W_c|^(1 - alpha) (alpha = 0.5 splits the difficulty evenly).
Only norms whose calibrated channel ranges show outliers (max > `threshold` x median)
are smoothed: on even activations smoothing only moves error into the weights.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from cimc.ir.graph import Graph, Node
from cimc.ir.ops import Constant, LayerNorm, Linear, RmsNorm
from cimc.quant.calibrate import Calibration


def smooth_graph(
    graph: Graph, calib: Calibration, alpha: float, threshold: float = 4.0
) -> tuple[Graph, Calibration]:
    """A float-equivalent copy of `graph` with smoothed norms, and the matching calibration."""
    out = graph.copy()
    ranges, channels = dict(calib.ranges), dict(calib.channel_ranges)
    for node in graph.nodes():
        readers = _linear_readers(graph, node)
        if not readers or not has_outliers(channels.get(node.name), threshold):
            continue
        weights = [_constant(graph, r.inputs[1]) for r in readers]
        act = channels[node.name]
        wmax = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        s = np.where(
            (act > 0) & (wmax > 0), act**alpha / np.maximum(wmax, 1e-12) ** (1 - alpha), 1.0
        )
        _rescale_norm(out, node, 1.0 / s)
        for reader, w in zip(readers, weights, strict=True):
            new_w = out.add_constant(
                (w * s[:, None]).astype(np.float32), f"{reader.inputs[1]}_smoothed"
            )
            out.set_inputs(reader.name, (reader.inputs[0], new_w, *reader.inputs[2:]))
        ranges[node.name] = float((act / s).max())
        channels[node.name] = act / s
    out.dead_code_elimination()
    out.verify()
    return out, replace(calib, ranges=ranges, channel_ranges=channels)


def has_outliers(channel_ranges: np.ndarray | None, threshold: float) -> bool:
    """Whether a few channels dominate: max > threshold x median of the channel ranges."""
    if channel_ranges is None or channel_ranges.size < 2:
        return False
    return bool(channel_ranges.max() > threshold * np.median(channel_ranges))


def _linear_readers(graph: Graph, node: Node) -> list[Node]:
    """The readers of a norm output when they are all linears reading it as x; else []."""
    if not isinstance(node.op, LayerNorm | RmsNorm) or graph.is_output(node.name):
        return []
    if not all(isinstance(graph.node(i).op, Constant) for i in node.inputs[1:]):
        return []
    readers = [graph.node(u) for u in graph.users(node.name)]
    ok = all(
        isinstance(r.op, Linear) and r.inputs[0] == node.name and node.name not in r.inputs[1:]
        for r in readers
    )
    return readers if ok else []


def _constant(graph: Graph, name: str) -> np.ndarray:
    return np.asarray(graph.node(name).op.value, np.float64)  # type: ignore[attr-defined]


def _rescale_norm(out: Graph, node: Node, factor: np.ndarray) -> None:
    """gamma (and beta) times `factor`, as new constants (the old ones may be shared)."""
    params = [
        out.add_constant((_constant(out, p) * factor).astype(np.float32), f"{p}_smoothed")
        for p in node.inputs[1:]
    ]
    out.set_inputs(node.name, (node.inputs[0], *params))
