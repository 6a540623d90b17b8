"""predict-sparsity: a low-rank activity predictor before every FFN's up-projection.

    quantize,predict-sparsity{recall=0.95}

Runs on the quantized graph (`--sparsity predict` appends it after `quantize`): the
predictors are fitted on the calibration inputs through the integer golden, from the codes
the program will see, and inserted as q-ops, so the golden applies them too
(cimc/quant/predictor.py). The masked up-projections then load only the columns of the
neurons predicted active (cimc/backend/lower/predicted_linear.py), and the down-projections
only the rows of the neurons that are non-zero (`--sparsity exact`'s machinery).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from cimc.errors import CimcError
from cimc.ir.graph import Graph
from cimc.passes.manager import Pass, PassResult, register_pass
from cimc.quant.calibrate import load_calibration_file
from cimc.quant.dialect import QEmbedding, QLinear, QMaskedLinear
from cimc.quant.golden import run_golden
from cimc.quant.predictor import (
    DEFAULT_RECALL,
    FfnSite,
    Tokens,
    ffn_sites,
    fit_predictor,
    insert_predictor,
)
from cimc.reference.float_model import default_inputs

PREDICTOR_SAMPLES = 32  # generated inputs: twice 16 (fitting and held-out); cheap to run
Values = dict[str, np.ndarray]


@register_pass
@dataclass(frozen=True)
class PredictSparsity(Pass):
    NAME = "predict-sparsity"
    calibration: str = ""
    samples: int = PREDICTOR_SAMPLES
    seed: int = 0
    recall: float = DEFAULT_RECALL
    quiet: bool = False

    def apply(self, ir: Any) -> PassResult:
        if not isinstance(ir, Graph):
            raise CimcError(f"pass {self.NAME} runs on a graph, not on {type(ir).__name__}")
        if not 0.0 < self.recall <= 1.0:
            raise CimcError(f"recall must be in (0, 1], got {self.recall}", self.NAME)
        if any(isinstance(n.op, QMaskedLinear) for n in ir.nodes()):
            return PassResult(ir, False)  # already predicted (e.g. IR text read back)
        if not any(isinstance(n.op, QLinear) for n in ir.nodes()):
            raise CimcError(f"pass {self.NAME} runs after quantize (no q.linear here)")
        sites = ffn_sites(ir)
        if not sites:
            raise CimcError(
                "--sparsity predict needs a feed-forward block (a linear layer, an "
                "activation, a linear layer) and the model has none; use --sparsity none",
                "sparsity",
            )
        fit, held_out = self._calibration(ir, sites)
        graph = ir.copy()
        notes = []
        for site in sites:
            where = ir.node(site.score).where
            p = fit_predictor(
                _tokens(fit, site),
                _tokens(held_out, site),
                _plan(ir, site.score),
                len(site.masked),
                self.recall,
                where,
            )
            insert_predictor(graph, site, p)
            notes.append(
                f"%{site.score}: rank {p.rank}, recall {p.recall:.3f}, predicted "
                f"{p.predicted:.1%} of neurons (active {p.active:.1%})"
            )
        graph.verify()
        if not self.quiet:
            note = "; ".join(notes)
            sys.stderr.write(f"cimc: sparsity predictors on calibration data: {note}\n")
        return PassResult(graph, True)

    def _calibration(self, graph: Graph, sites: list[FfnSite]) -> tuple[Values, Values]:
        """The golden's values the predictors need (each site's up-projection input and
        activation output, as [tokens x channels] rows) on the fitting samples (even
        ones) and the held-out samples (odd ones; one sample: its rows cut in halves)."""
        names = sorted({s.x for s in sites} | {s.activation for s in sites})
        seen: list[Values] = []
        for sample in self._samples(graph):
            values = run_golden(graph, sample, keep_all=True).values
            seen.append({name: _rows(values[name]) for name in names})
        if len(seen) == 1:
            half = len(next(iter(seen[0].values()))) // 2
            if half == 0:
                raise CimcError("the predictors need at least two calibration tokens", self.NAME)
            seen = [
                {k: v[:half] for k, v in seen[0].items()},
                {k: v[half:] for k, v in seen[0].items()},
            ]
        return _join(seen[0::2]), _join(seen[1::2])

    def _samples(self, graph: Graph) -> list[dict[str, np.ndarray]]:
        """The calibration file's samples, or the inputs `quantize` generated (the same
        seeds, token ids bounded by the smallest embedding table)."""
        if self.calibration:
            return load_calibration_file(graph, self.calibration)
        if self.samples < 1:
            raise CimcError(f"need at least one calibration sample, got {self.samples}", self.NAME)
        tables = [n.op.plan.table.shape[0] for n in graph.nodes() if isinstance(n.op, QEmbedding)]
        vocab = int(min(tables)) if tables else None
        return [
            default_inputs(graph, seed=self.seed + k, vocab_size=vocab) for k in range(self.samples)
        ]


def _join(part: list[Values]) -> Values:
    """The samples' rows of every value, one after the other."""
    return {name: np.concatenate([v[name] for v in part]) for name in part[0]}


def _tokens(values: Values, site: FfnSite) -> Tokens:
    return Tokens(values[site.x], values[site.activation] != 0)


def _rows(value: np.ndarray) -> np.ndarray:
    return np.asarray(value).reshape(-1, value.shape[-1])


def _plan(graph: Graph, name: str) -> Any:
    op = graph.node(name).op
    assert isinstance(op, QLinear)
    return op.plan
