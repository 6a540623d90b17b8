"""The importers' canonicalization pipeline: simplify and fold, recognize idioms, repeat."""

from __future__ import annotations

from cimc.passes.canonicalize import Canonicalize
from cimc.passes.canonicalize_layout import CanonicalizeLayout
from cimc.passes.idioms_activation import ActivationIdioms
from cimc.passes.idioms_linear import LinearIdioms
from cimc.passes.idioms_norm import NormIdioms
from cimc.passes.idioms_rotary import RotaryIdioms
from cimc.passes.manager import Pass


def idiom_pipeline() -> list[Pass]:
    """Passes that turn an imported graph into the normal form of CANONICAL_OPS.md."""
    return [
        Canonicalize(),
        CanonicalizeLayout(),
        Canonicalize(),
        LinearIdioms(),
        ActivationIdioms(),
        NormIdioms(),
        RotaryIdioms(),
        Canonicalize(),
    ]
