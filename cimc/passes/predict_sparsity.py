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
from cimc.quant.calibrate import DEFAULT_SAMPLES, load_calibration_file
from cimc.quant.dialect import QEmbedding, QLinear, QMaskedLinear
from cimc.quant.golden import run_golden
from cimc.quant.predictor import DEFAULT_RECALL, FfnSite, ffn_sites, fit_predictor, insert_predictor
from cimc.reference.float_model import default_inputs


@register_pass
@dataclass(frozen=True)
class PredictSparsity(Pass):
    NAME = "predict-sparsity"
    calibration: str = ""
    samples: int = DEFAULT_SAMPLES
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
        inputs, active = self._calibration(ir, sites)
        graph = ir.copy()
        notes = []
        for site in sites:
            where = ir.node(site.score).where
            p = fit_predictor(
                inputs[site.x],
                _plan(ir, site.score),
                active[site.activation],
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

    def _calibration(
        self, graph: Graph, sites: list[FfnSite]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Per site, the up-projection input codes [N x K] and the activity [N x F] (the
        activation's output code is not 0) over every calibration token."""
        xs: dict[str, list[np.ndarray]] = {s.x: [] for s in sites}
        acts: dict[str, list[np.ndarray]] = {s.activation: [] for s in sites}
        for sample in self._samples(graph):
            values = run_golden(graph, sample, keep_all=True).values
            for name, seen in xs.items():
                seen.append(_rows(values[name]))
            for name, seen in acts.items():
                seen.append(_rows(values[name]) != 0)
        return (
            {k: np.concatenate(v) for k, v in xs.items()},
            {k: np.concatenate(v) for k, v in acts.items()},
        )

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


def _rows(value: np.ndarray) -> np.ndarray:
    return np.asarray(value).reshape(-1, value.shape[-1])


def _plan(graph: Graph, name: str) -> Any:
    op = graph.node(name).op
    assert isinstance(op, QLinear)
    return op.plan
