"""idioms: the importers' normal form, as one composite pass of the pipeline.

Tidy (fold, simplify, shorten layout chains: idioms match the shortest spelling), fold
batch norms into convs and rewrite convs and pools as im2col and linears, then recognize
linear layers, activations, norms, rotary embeddings and attention, tidy, undo
GQA's repeat_kv, tidy. The result is the normal form (check_canonical.py) whatever the
exporter; `cimc compile --print-ir-after idioms-norm` shows one step of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from cimc.passes.canonicalize import Canonicalize
from cimc.passes.canonicalize_layout import CanonicalizeLayout
from cimc.passes.conv_to_matmul import ConvToMatmul
from cimc.passes.idioms_activation import ActivationIdioms
from cimc.passes.idioms_attention import AttentionIdioms
from cimc.passes.idioms_conv import ConvIdioms
from cimc.passes.idioms_gqa import GroupedQueryAttention
from cimc.passes.idioms_linear import LinearIdioms
from cimc.passes.idioms_norm import NormIdioms
from cimc.passes.idioms_rotary import RotaryIdioms
from cimc.passes.manager import CompositePass, Pass, register_pass


@register_pass
@dataclass(frozen=True)
class Idioms(CompositePass):
    NAME = "idioms"

    def passes(self) -> list[Pass]:
        return [
            *_tidy(),
            ConvIdioms(),
            ConvToMatmul(),
            LinearIdioms(),
            ActivationIdioms(),
            NormIdioms(),
            RotaryIdioms(),
            AttentionIdioms(),
            *_tidy(),
            GroupedQueryAttention(),
            *_tidy(),
        ]


def _tidy() -> list[Pass]:
    return [Canonicalize(), CanonicalizeLayout(), Canonicalize()]
