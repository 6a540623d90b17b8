"""Low-rank sparsity predictors of FFN layers (`--sparsity predict`, "LLM in a flash").

Why: under `--sparsity exact` the up-projection must run in full to learn which neurons are
active, so only the down-projection's rows are skipped. A predictor that guesses the active
neurons from the up-projection's input, before it runs, lets the up-projection (and a gated
FFN's gate and up) skip the columns of the neurons it predicts inactive too.

The predictor is an integer graph construct, so the integer golden applies it exactly as the
program does and program == golden stays a proof. For an FFN whose up-projection U (the
linear feeding the activation) reads x:

    low   = q.linear(x)      [.., r]   x codes @ A  (int8 out)
    score = q.linear(low)    [.., F]   low @ B + bias - theta (int8 out)
    mask  = q.lut(score)     [.., F]   1 where score >= 1 code, else 0
    U'    = q.linear.masked(x, mask)   U's output, code 0 where the mask is 0

Fit (on the calibration inputs, from the quantized graph's own codes, split by sample into
a fitting half and a held-out half): the scoring target is U's pre-activation in output
codes, `s = (x @ W + b) * m` (m: U's per-channel requant ratio). Its best rank-r
approximation on the fitting tokens comes from the SVD of M = X @ (W m): B = the top r
right singular vectors, A = (W m) B^T, so `s_r = X A B + b m`. The threshold theta is the
(1 - recall) quantile of s_r over the held-out tokens' truly active (token, neuron) pairs
(activation output code != 0). The rank is the compiler's choice: of ranks 1, 2, 4, ...
up to min(K, F) / 2 it takes the one whose integer predictor moves the fewest bytes per
held-out token, its own weights (r (K + F)) plus the masked layers' predicted-active
columns. Recall and the predicted fraction are those of the integer predictor on the
held-out tokens, not of the float fit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from cimc.ir.graph import Graph, Node
from cimc.quant import plans, recipes
from cimc.quant.dialect import QLinear, QLut, QMaskedLinear, QMul, QRampLut, QRequant
from cimc.quant.plans import LinearPlan, LutPlan

DEFAULT_RECALL = 0.95
MASK_TABLE = np.where(np.arange(256) - 128 >= 1, 1, 0).astype(np.int8)  # code >= 1 -> 1


@dataclass(frozen=True)
class FfnSite:
    """One FFN: the linears a predictor masks (the scoring one first) and its activation."""

    x: str  # the up-projection's input, shared by every masked linear
    score: str  # the linear whose pre-activation the predictor estimates (up, or gate)
    masked: tuple[str, ...]  # score, and a gated FFN's up-projection
    activation: str  # the activation node applied to `score`'s output
    down: str  # the down-projection the FFN ends in


@dataclass(frozen=True)
class Predictor:
    """A fitted integer predictor and what calibration said about it."""

    rank: int
    low: LinearPlan  # x -> [.., rank]
    low_scale: float
    score: LinearPlan  # [.., rank] -> [.., F]
    score_scale: float
    recall: float  # share of truly active (token, neuron) pairs predicted active
    predicted: float  # share of (token, neuron) pairs predicted active
    active: float  # share truly active


def _through_requants(graph: Graph, name: str) -> Node:
    node = graph.node(name)
    while isinstance(node.op, QRequant):
        node = graph.node(node.inputs[0])
    return node


def _activation_of(graph: Graph, node: Node) -> tuple[Node, Node] | None:
    """(activation, scoring linear) when `node` is an activation of a linear's output."""
    if not isinstance(node.op, QLut | QRampLut):
        return None
    src = _through_requants(graph, node.inputs[0])
    return (node, src) if type(src.op) is QLinear else None


def ffn_sites(graph: Graph) -> list[FfnSite]:
    """The FFNs a predictor can mask: a down-projection fed (through requantizations) by an
    activation of an up-projection, by its square, or by the product of an activation of a
    gate projection and an up-projection of the same input (gated FFNs)."""
    sites = []
    for down in graph.nodes():
        if type(down.op) is not QLinear:
            continue
        src = _through_requants(graph, down.inputs[0])
        found = _activation_of(graph, src)
        if found is not None:
            act, score = found
            sites.append(FfnSite(score.inputs[0], score.name, (score.name,), act.name, down.name))
            continue
        if not isinstance(src.op, QMul):
            continue
        a, b = (_through_requants(graph, n) for n in src.inputs)
        for act_side, other in ((a, b), (b, a)):
            found = _activation_of(graph, act_side)
            if found is None:
                continue
            act, gate = found
            if other.name == act.name:  # act(u) * act(u): ReLU² and the like
                sites.append(FfnSite(gate.inputs[0], gate.name, (gate.name,), act.name, down.name))
                break
            if type(other.op) is QLinear and other.inputs[0] == gate.inputs[0]:
                masked = (gate.name, other.name)
                sites.append(FfnSite(gate.inputs[0], gate.name, masked, act.name, down.name))
                break
    return sites


def column_ratios(plan: LinearPlan, n: int) -> np.ndarray:
    """Each output channel's requant ratio mult / 2^shift (accumulator -> output code)."""
    rq = plan.requant
    ratio = rq.mult.astype(np.float64) / np.exp2(rq.shift.astype(np.float64))
    return np.broadcast_to(ratio, (n,)).astype(np.float64)


@dataclass(frozen=True)
class Tokens:
    """Calibration tokens of one site: up-projection input codes and true activity."""

    x: np.ndarray  # [N x K] int8 codes
    active: np.ndarray  # [N x F] bool: the activation's output code is not 0


def fit_predictor(
    fit: Tokens,
    held_out: Tokens,
    plan: LinearPlan,
    masked_layers: int,
    recall: float = DEFAULT_RECALL,
    where: str | None = None,
) -> Predictor:
    """The cheapest integer predictor reaching `recall` (see the module doc): its basis
    from the `fit` tokens, its threshold, rank and figures from the `held_out` ones (a
    basis fitted to few tokens predicts them much better than new ones: a threshold set on
    the same tokens would promise a recall the model does not get)."""
    n = plan.weight.shape[1]
    w = plan.effective_weight().astype(np.float64) * column_ratios(plan, n)
    bias = plan.bias.astype(np.float64) * column_ratios(plan, n)
    _, _, vt = np.linalg.svd(fit.x.astype(np.float64) @ w, full_matrices=False)
    k, f = w.shape
    best: Predictor | None = None
    for rank in _ranks(min(k, f, vt.shape[0])):
        candidate = _candidate(held_out, w, bias, vt[:rank], recall, where)
        if best is None or _bytes(candidate, k, f, masked_layers) < _bytes(
            best, k, f, masked_layers
        ):
            best = candidate
    assert best is not None
    return best


def _ranks(limit: int) -> list[int]:
    """1, 2, 4, ... up to half the smaller side (at least rank 1)."""
    ranks, r = [], 1
    while r <= max(1, limit // 2):
        ranks.append(r)
        r *= 2
    return ranks


def _bytes(p: Predictor, k: int, f: int, masked_layers: int) -> float:
    """Weight bytes per token: the predictor's own plus the masked layers' active columns."""
    return p.rank * (k + f) + masked_layers * k * f * p.predicted


def _candidate(
    tokens: Tokens,
    w: np.ndarray,
    bias: np.ndarray,
    basis: np.ndarray,
    recall: float,
    where: str | None,
) -> Predictor:
    """The rank-len(basis) predictor, its threshold at `recall` of `tokens`, integerized
    and measured on them."""
    a = w @ basis.T  # [K x r]
    low = tokens.x.astype(np.float64) @ a
    score = low @ basis + bias
    truth = score[tokens.active]
    theta = float(np.quantile(truth, 1.0 - recall)) if truth.size else float(score.max()) + 1
    low_scale = max(float(np.abs(low).max()), 1e-6) / 127
    span = max(float(np.abs(score - theta).max()), 1e-6)
    score_scale = span / 127
    low_plan = plans.plan_linear(a, None, 1.0, low_scale, 8, where)
    shifted = bias - theta + 0.5 * score_scale  # code >= 1 <=> score_r >= theta (rounding)
    score_plan = plans.plan_linear(basis, shifted, low_scale, score_scale, 8, where)
    codes = torch.from_numpy(tokens.x.astype(np.int64))
    mask = apply_predictor(codes, low_plan, score_plan).numpy().astype(bool)
    hits = int((mask & tokens.active).sum())
    total = int(tokens.active.sum())
    return Predictor(
        rank=basis.shape[0],
        low=low_plan,
        low_scale=low_scale,
        score=score_plan,
        score_scale=score_scale,
        recall=hits / total if total else 1.0,
        predicted=float(mask.mean()),
        active=float(tokens.active.mean()),
    )


def apply_predictor(x: torch.Tensor, low: LinearPlan, score: LinearPlan) -> torch.Tensor:
    """The integer mask (0/1) of codes x, as the golden computes it."""
    scored = recipes.linear(recipes.linear(x, low), score)
    return recipes.unary(scored, LutPlan(MASK_TABLE))


def insert_predictor(graph: Graph, site: FfnSite, p: Predictor) -> str:
    """Add the predictor's three nodes before the site's masked linears, mask them; returns
    the mask's name."""
    score_node = graph.node(site.score)
    loc = score_node.loc
    low = graph.add_node(
        QLinear(scale=p.low_scale, bits=8, plan=p.low), [site.x], f"{site.score}.predict", loc
    )
    scored = graph.add_node(
        QLinear(scale=p.score_scale, bits=8, plan=p.score), [low], f"{site.score}.score", loc
    )
    mask = graph.add_node(
        QLut(scale=1.0, bits=8, fn="predicted", plan=LutPlan(MASK_TABLE)),
        [scored],
        f"{site.score}.mask",
        loc,
    )
    for name in site.masked:
        op = graph.node(name).op
        assert isinstance(op, QLinear)
        masked = QMaskedLinear(scale=op.scale, bits=op.bits, plan=op.plan)
        graph.replace_op(name, masked, [site.x, mask])
    return mask


def scored_layers(graph: Graph) -> dict[str, Node]:
    """Masked linear -> the activation applied to its output (through requantizations):
    the layers whose predictor's recall can be measured."""
    found = {}
    for node in graph.nodes():
        if not isinstance(node.op, QMaskedLinear):
            continue
        cur = node
        while True:
            users = [graph.node(u) for u in graph.users(cur.name)]
            nxt = next((u for u in users if isinstance(u.op, QLut | QRampLut | QRequant)), None)
            if nxt is None:
                break
            if not isinstance(nxt.op, QRequant):
                found[node.name] = nxt
                break
            cur = nxt
    return found


def recall_counts(
    graph: Graph, values: Mapping[str, np.ndarray], select: Callable[[str, np.ndarray], np.ndarray]
) -> dict[str, tuple[int, int]]:
    """Per masked layer, (truly active pairs predicted active, truly active pairs) over the
    (token, neuron) pairs `select` keeps: truly active = the activation of the unmasked
    layer's output is not code 0."""
    counts = {}
    for name, act in scored_layers(graph).items():
        node = graph.node(name)
        op = node.op
        assert isinstance(op, QMaskedLinear)
        y = recipes.linear(torch.from_numpy(values[node.inputs[0]].astype(np.int64)), op.plan)
        truth = _activation(graph, node, act, y).numpy() != 0
        mask = values[node.inputs[1]] != 0
        truth, mask = select(name, truth), select(name, mask)
        counts[name] = (int((truth & mask).sum()), int(truth.sum()))
    return counts


def _activation(graph: Graph, node: Node, act: Node, y: torch.Tensor) -> torch.Tensor:
    """The activation's output codes of `y`, through the requantizations between them."""
    chain = []
    cur = act
    while cur.inputs[0] != node.name:
        cur = graph.node(cur.inputs[0])
        chain.append(cur)
    for rq in reversed(chain):
        assert isinstance(rq.op, QRequant)
        y = recipes.requant(y, rq.op.plan)
    if isinstance(act.op, QLut):
        return recipes.unary(y, act.op.plan)
    assert isinstance(act.op, QRampLut)
    return recipes.ramp_unary(y, act.op.plan)
