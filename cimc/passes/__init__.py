"""Passes over the IR and the pass manager (see cimc.passes.manager)."""
