"""Shared strategies and fixtures for the backend planning tests."""

from __future__ import annotations

import hypothesis.strategies as st

from cimc.backend.plan.target import Target
from cimc.backend.plan.workload import MatmulLayer, Workload


@st.composite
def targets(draw: st.DrawFn, max_macros: int = 6) -> Target:
    """Small random machines: up to 3x2 cores, up to `max_macros` macros of 4..32 cells."""
    mesh = (draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    return Target(
        name="random",
        cores=mesh[0] * mesh[1],
        mesh=mesh,
        macros_per_core=draw(st.integers(1, max_macros)),
        rows=draw(st.integers(4, 32)),
        cols=draw(st.integers(4, 32)),
    )


@st.composite
def workloads(draw: st.DrawFn, max_layers: int = 5, max_dim: int = 150) -> Workload:
    """A chain of static matmuls with random (often odd) dims."""
    count = draw(st.integers(1, max_layers))
    layers = []
    for i in range(count):
        layers.append(
            MatmulLayer(
                f"l{i}",
                k=draw(st.integers(1, max_dim)),
                n=draw(st.integers(1, max_dim)),
                vectors=draw(st.integers(1, 9)),
                depends_on=(f"l{i - 1}",) if i else (),
            )
        )
    return Workload(tuple(layers))
