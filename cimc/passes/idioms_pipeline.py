"""The importers' canonicalization pipeline: simplify and fold, recognize idioms, repeat."""

from __future__ import annotations

from cimc.passes.canonicalize import Canonicalize
from cimc.passes.canonicalize_layout import CanonicalizeLayout
from cimc.passes.idioms_activation import ActivationIdioms
from cimc.passes.idioms_attention import AttentionIdioms, GroupedQueryAttention
from cimc.passes.idioms_linear import LinearIdioms
from cimc.passes.idioms_norm import NormIdioms
from cimc.passes.idioms_rotary import RotaryIdioms
from cimc.passes.manager import Pass


def idiom_pipeline() -> list[Pass]:
    """Passes that turn an imported graph into the normal form (check_canonical.py)."""
    return [
        *_tidy(),
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
    """Fold, simplify and shorten layout chains (idioms match the shortest spelling)."""
    return [Canonicalize(), CanonicalizeLayout(), Canonicalize()]
