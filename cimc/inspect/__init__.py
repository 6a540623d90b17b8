"""Views of a compiled program for people: per graph node (from the instructions' source
comments) and per macro (which weight tile lives where in each phase)."""

from cimc.inspect.macros import MacroPhase, MacroUse, chip_phases, macro_phases
from cimc.inspect.nodes import NodeStats, node_listing, node_stats

__all__ = [
    "MacroPhase",
    "MacroUse",
    "NodeStats",
    "chip_phases",
    "macro_phases",
    "node_listing",
    "node_stats",
]
