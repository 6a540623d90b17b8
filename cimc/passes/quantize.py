"""quantize: canonical float graph -> q-dialect graph (calibration + integer plans).

    quantize{calibration=calib.npz,samples=8,method=max,wide=residual+norm+softmax+rotary+mul+act+output}

Without `calibration`, inputs are generated from their meaning and a note saying so goes
to stderr (unless quiet=true). `wide` lists the value categories kept in `wide-bits`
(int16) precision, '+'-separated ("none" for an all-int8 model); see cimc.quant.scales.
`headroom` widens the calibrated range of int16 values; `smooth` is the SmoothQuant alpha
of linear inputs with outlier channels: `auto` (each site picks the alpha that measures
best on the calibration data, or none), a number (that alpha wherever channels are
uneven) or 0 (off); `smooth-sites` smooths exactly the '+'-separated values named, or
`none` (decode quantizes its probe at another length with the sites of the real graph, so
that both have the same structure). `weight_bits=4` quantizes the linear layers' weights
to 4-bit per-channel codes (packed two a macro cell by the backend), except those whose
node name contains a part of `keep_int8` ('+'-separated, e.g. lm_head+embed);
`weight_group=G` gives those weights one scale per G rows and channel, combined by exact
integer multipliers (cimc/quant/weight_groups.py).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from cimc.errors import CimcError
from cimc.ir.graph import Graph
from cimc.ir.mapped import release_pages
from cimc.passes.manager import Pass, PassResult, register_pass
from cimc.quant.options import WeightPrecision
from cimc.quant.quantize import QuantOptions, quantize_model
from cimc.quant.scales import WIDE_CATEGORIES, Precision
from cimc.quant.smooth import SEARCH_ALPHAS


@register_pass
@dataclass(frozen=True)
class Quantize(Pass):
    NAME = "quantize"
    calibration: str = ""
    samples: int = 8
    seed: int = 0
    method: str = "max"
    percentile: float = 99.99
    act_bits: int = 8
    wide_bits: int = 16
    wide: str = "+".join(WIDE_CATEGORIES)
    headroom: float = 2.0
    p_bits: int = 14
    smooth: str = "auto"
    smooth_threshold: float = 4.0
    smooth_sites: str = ""  # '+'-separated values smoothed whatever their statistics, or none
    quiet: bool = False
    weight_bits: int = 8
    keep_int8: str = ""  # '+'-separated node-name parts whose linears keep int8 weights
    weight_group: int = 0  # rows per group-wise weight scale (0: per channel)

    def options(self) -> QuantOptions:
        wide = () if self.wide in ("", "none") else tuple(self.wide.split("+"))
        unknown = [w for w in wide if w not in WIDE_CATEGORIES]
        if unknown:
            known = "+".join(WIDE_CATEGORIES)
            raise CimcError(f"unknown wide category {unknown[0]!r} (known: {known})", "quantize")
        for bits in (self.act_bits, self.wide_bits):
            if bits not in (8, 16):
                raise CimcError(f"activation widths must be 8 or 16, got {bits}", "quantize")
        precision = Precision(self.act_bits, self.wide_bits, wide, self.headroom)
        sites = None if not self.smooth_sites else self.sites()
        alphas = self.smooth_alphas()
        return QuantOptions(
            precision, self.p_bits, alphas, self.smooth_threshold, sites, self.weights()
        )

    def weights(self) -> WeightPrecision:
        if self.weight_bits not in (4, 8):
            raise CimcError(f"weight_bits must be 4 or 8, got {self.weight_bits}", "quantize")
        keep = tuple(p for p in self.keep_int8.split("+") if p)
        if self.weight_group < 0:
            raise CimcError(f"weight_group must be >= 0, got {self.weight_group}", "quantize")
        return WeightPrecision(self.weight_bits, keep, self.weight_group)

    def sites(self) -> tuple[str, ...]:
        return () if self.smooth_sites == "none" else tuple(self.smooth_sites.split("+"))

    def smooth_alphas(self) -> tuple[float, ...]:
        if self.smooth == "auto":
            return SEARCH_ALPHAS
        try:
            alpha = float(self.smooth)
        except ValueError:
            alpha = -1.0
        if not 0.0 <= alpha <= 1.0:
            raise CimcError(
                f"smooth must be 'auto' or an alpha in [0, 1], got {self.smooth!r}", "quantize"
            )
        return (alpha,) if alpha > 0 else ()

    def apply(self, ir: Any) -> PassResult:
        if not isinstance(ir, Graph):
            raise CimcError(f"pass {self.NAME} runs on a graph, not on {type(ir).__name__}")
        _check_keep(ir, self.options().weights)
        result = quantize_model(
            ir,
            self.calibration or None,
            samples=self.samples,
            seed=self.seed,
            method=self.method,
            percentile=self.percentile,
            options=self.options(),
        )
        if result.calibration.generated and not self.quiet:
            sys.stderr.write(f"cimc: {result.note}\n")
        release_pages(ir.constants().values())  # the float weights, read again if needed
        return PassResult(result.graph, True)


def _check_keep(graph: Graph, weights: WeightPrecision) -> None:
    linears = [n.name for n in graph.nodes() if n.op.NAME == "linear"]
    for part in weights.keep_int8:
        if not any(part in name for name in linears):
            raise CimcError(
                f"keep_int8 part {part!r} is in no linear layer's name (they are: "
                f"{', '.join(linears[:6])}{', ...' if len(linears) > 6 else ''})",
                "--keep-int8",
            )
