"""Outlier smoothing (SmoothQuant) folded into the weights: exact in float, kind to int8.

A value read by linear layers whose channels are uneven (a few huge ones, as pretrained
models have after LayerNorm gains and in the FFN's GELU output) wastes the int8 codes of
its per-tensor scale on them. Dividing channel c by s[c] before the linears and
multiplying row c of each linear's weight by s[c] leaves the float model unchanged, evens
out the activation, and lets the per-output-channel weight quantization absorb the rest.
s[c] = max|x_c|^alpha / max|W_c|^(1 - alpha).

Where the division goes:
- a norm read only by linears: into gamma and beta (free);
- any other value (a norm that also feeds the residual, a GELU output): a new
  `mul(x, 1/s)` node between the value and its linears, which the quantizer turns into a
  per-channel q.requant of the int16 value (cimc.quant.quantize_rules.scale_by_constant).

Only values whose calibrated channel ranges show outliers (max > `threshold` x median)
are candidates. With several candidate alphas, each site takes the one that minimizes the
measured error of its linears' outputs on the calibration rows (int8 activation at the
per-tensor range, int8 weights per output channel), and is smoothed only when that error
drops below MIN_GAIN x the unsmoothed one: on even activations smoothing only moves error
into the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from cimc.ir.graph import Graph, Node
from cimc.ir.ops import Constant, LayerNorm, Linear, Mul, RmsNorm
from cimc.quant.calibrate import Calibration

SEARCH_ALPHAS = (0.3, 0.5, 0.7, 0.85)
MIN_GAIN = 0.8  # smooth a site only when its measured error drops below this fraction


def smooth_graph(
    graph: Graph,
    calib: Calibration,
    alphas: Sequence[float] | float,
    threshold: float = 4.0,
    sites: Sequence[str] | None = None,
) -> tuple[Graph, Calibration]:
    """A float-equivalent copy of `graph` with smoothed sites, and the matching calibration.

    `alphas`: one alpha (applied wherever outliers are), or candidates chosen per site by
    measured error on the calibration rows. `sites`: smooth exactly these values, with the
    first alpha (a graph that must have the structure of another one's, as decode's probe
    at another length)."""
    candidates = (alphas,) if isinstance(alphas, float | int) else tuple(alphas)
    out = graph.copy()
    ranges, channels = dict(calib.ranges), dict(calib.channel_ranges)
    for node in graph.nodes():
        readers, act = linear_readers(graph, node), channels.get(node.name)
        chosen = has_outliers(act, threshold) if sites is None else node.name in sites
        if not readers or act is None or not chosen:
            continue
        weights = [_constant(graph, r.inputs[1]) for r in readers]
        s = (
            factors(act, weights, candidates[0])
            if sites is not None
            else choose_factors(act, weights, calib.rows.get(node.name), candidates)
        )
        if s is None:
            continue
        smoothed = _divide(out, graph, node, readers, s)
        for reader, w in zip(readers, weights, strict=True):
            new_w = out.add_constant(
                (w * s[:, None]).astype(np.float32), f"{reader.inputs[1]}_smoothed"
            )
            inputs = out.node(reader.name).inputs
            out.set_inputs(reader.name, (smoothed, new_w, *inputs[2:]))
        ranges[smoothed] = float((act / s).max())
        channels[smoothed] = act / s
    out.dead_code_elimination()
    out.verify()
    return out, replace(calib, ranges=ranges, channel_ranges=channels)


def has_outliers(channel_ranges: np.ndarray | None, threshold: float) -> bool:
    """Whether a few channels dominate: max > threshold x median of the channel ranges."""
    if channel_ranges is None or channel_ranges.size < 2:
        return False
    return bool(channel_ranges.max() > threshold * np.median(channel_ranges))


def linear_readers(graph: Graph, node: Node) -> list[Node]:
    """The linears reading `node` as their activation, when their weights are constants."""
    if isinstance(node.op, Constant) or not node.type.dtype.is_float or node.type.rank < 1:
        return []
    readers = [graph.node(u) for u in graph.users(node.name)]
    return [
        r
        for r in readers
        if isinstance(r.op, Linear)
        and r.inputs[0] == node.name
        and node.name not in r.inputs[1:]
        and isinstance(graph.node(r.inputs[1]).op, Constant)
    ]


def factors(act: np.ndarray, weights: Sequence[np.ndarray], alpha: float) -> np.ndarray:
    """s[c] = act[c]^alpha / max|W_c|^(1 - alpha), 1 where a channel or weight row is 0."""
    wmax = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
    ok = (act > 0) & (wmax > 0)
    safe_act, safe_w = np.where(ok, act, 1.0), np.where(ok, wmax, 1.0)
    return np.where(ok, safe_act**alpha / safe_w ** (1 - alpha), 1.0)


def choose_factors(
    act: np.ndarray,
    weights: Sequence[np.ndarray],
    rows: np.ndarray | None,
    alphas: Sequence[float],
) -> np.ndarray | None:
    """The smoothing factors of one site, or None when smoothing would not help."""
    alphas = [a for a in alphas if a > 0]
    if not alphas:
        return None
    if len(alphas) == 1 or rows is None or not len(rows):
        return factors(act, weights, alphas[0])
    errors = SiteErrors(rows, weights)
    plain = errors.of(act, np.ones_like(act))
    options = [factors(act, weights, a) for a in alphas]
    measured = [errors.of(act, s) for s in options]
    best = int(np.argmin(measured))  # the first (smallest alpha) of equal errors
    return options[best] if measured[best] < MIN_GAIN * plain else None


class SiteErrors:
    """Relative squared error of a site's linear outputs on calibration rows, for given
    factors: the activation in int8 at its smoothed per-tensor range, the
    weights in int8 per output column (float32: a ranking, not a proof)."""

    def __init__(self, rows: np.ndarray, weights: Sequence[np.ndarray]) -> None:
        self.x = np.asarray(rows, np.float32)
        self.weights = [np.asarray(w, np.float32) for w in weights]
        self.refs = [self.x @ w for w in self.weights]
        self.norms = [max(float(np.sum(r.astype(np.float64) ** 2)), 1e-30) for r in self.refs]

    def of(self, act: np.ndarray, s: np.ndarray) -> float:
        top = float((act / s).max())
        step = top / 127 if top > 0 else 1.0
        scale = (1.0 / (s * step)).astype(np.float32)
        xq = np.clip(np.rint(self.x * scale), -127, 127) * np.float32(step)
        total = 0.0
        for w, ref, norm in zip(self.weights, self.refs, self.norms, strict=True):
            ws = w * s[:, None].astype(np.float32)
            wstep = np.abs(ws).max(axis=0) / 127
            wstep = np.where(wstep > 0, wstep, 1.0).astype(np.float32)
            err = xq @ (np.rint(ws / wstep) * wstep) - ref
            total += float(np.sum(err.astype(np.float64) ** 2)) / norm
        return total


def _divide(out: Graph, graph: Graph, node: Node, readers: list[Node], s: np.ndarray) -> str:
    """Divide the value by s for its linear readers; returns the value they now read."""
    users = graph.users(node.name)
    folds = (
        isinstance(node.op, LayerNorm | RmsNorm)
        and len(readers) == len(users)
        and not graph.is_output(node.name)
        and all(isinstance(graph.node(i).op, Constant) for i in node.inputs[1:])
    )
    if folds:
        _rescale_norm(out, node, 1.0 / s)
        return node.name
    shape = (1,) * (node.type.rank - 1) + (len(s),)
    inverse = (1.0 / s).reshape(shape).astype(np.float32)
    scale = out.add_constant(inverse, f"{node.name}_smooth_inv")
    return out.add_node(Mul(), [node.name, scale], f"{node.name}_smoothed", node.loc)


def _constant(graph: Graph, name: str) -> np.ndarray:
    return np.asarray(graph.node(name).op.value, np.float64)  # type: ignore[attr-defined]


def _rescale_norm(out: Graph, node: Node, factor: np.ndarray) -> None:
    """gamma (and beta) times `factor`, as new constants (the old ones may be shared)."""
    params = [
        out.add_constant((_constant(out, p) * factor).astype(np.float32), f"{p}_smoothed")
        for p in node.inputs[1:]
    ]
    out.set_inputs(node.name, (node.inputs[0], *params))


def inserted_sites(qgraph: Graph, graph: Graph) -> list[str]:
    """The values of `graph` whose smoothing put a division node into `qgraph` (the
    structural part of the smoothing decisions; folded norms change constants only)."""
    return [
        n.inputs[0]
        for n in qgraph.nodes()
        if n.name not in graph and n.inputs and n.name == f"{n.inputs[0]}_smoothed"
    ]
