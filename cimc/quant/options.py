"""The choices of the quantize pass (its options, as the quantizer and its rules see them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cimc.quant.scales import Precision
from cimc.quant.smooth import SEARCH_ALPHAS


@dataclass(frozen=True)
class QuantOptions:
    """Choices of the quantize pass."""

    precision: Precision = field(default_factory=Precision)
    attention_p_bits: int = 14  # 14: two int8 MVM passes for p' @ v; 7: one pass
    # outlier smoothing of linear inputs (cimc.quant.smooth): one alpha applied wherever
    # channels are uneven, several chosen per site by measured error, () = off
    smooth_alphas: tuple[float, ...] = SEARCH_ALPHAS
    smooth_threshold: float = 4.0  # ... candidates where channel max > this x channel median
    smooth_sites: tuple[str, ...] | None = None  # exactly these values (decode's probe)
