"""Import the generic graph passes so that they are registered by name."""

from cimc.passes.canonicalize import Canonicalize
from cimc.passes.cse import CommonSubexpressionElimination
from cimc.passes.dce import DeadCodeElimination
from cimc.passes.fold_constants import FoldConstants
from cimc.passes.simplify import Simplify

__all__ = [
    "Canonicalize",
    "CommonSubexpressionElimination",
    "DeadCodeElimination",
    "FoldConstants",
    "Simplify",
]
