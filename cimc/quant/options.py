"""The choices of the quantize pass (its options, as the quantizer and its rules see them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cimc.quant.scales import Precision
from cimc.quant.smooth import SEARCH_ALPHAS


@dataclass(frozen=True)
class WeightPrecision:
    """Bits of the linear layers' weight codes: `bits` (8, or 4: packed two a macro cell
    on the machine) except the layers whose node name contains one of `keep_int8`;
    `group`: rows per group-wise scale of those layers (0: one scale per channel)."""

    bits: int = 8
    keep_int8: tuple[str, ...] = ()
    group: int = 0

    def kept(self, node: str) -> bool:
        return any(part in node for part in self.keep_int8)

    def bits_of(self, node: str) -> int:
        return 8 if self.kept(node) else self.bits

    def group_of(self, node: str) -> int:
        return 0 if self.kept(node) else self.group


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
    weights: WeightPrecision = field(default_factory=WeightPrecision)
