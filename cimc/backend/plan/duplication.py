"""The map pass's `mapping`: every layer placed once (`spread`), hot layers duplicated, or
whichever of the two the cost model says is faster (`auto`).

Why duplicate: a layer whose tiles fill a few macros runs on a few cores while the others
idle; with every weight resident and macros to spare, copies of its tiles on free macros
(cimc/backend/plan/mapping.py, `_duplicate`: the hottest layer first, at most one copy per
core) let the copies split its token rows and run in parallel (lowering:
cimc/backend/lower/linear_copies.py). The price is a write of every copy's tiles, read
from DRAM again by each copy: on a single cold inference that can cost more than the
parallelism saves (small batches), while in the steady state (weights already in the
macros, every later inference) only the parallelism is left. So `auto` does not guess:
the lower pass lowers both plans and keeps the program of the smaller modelled makespan
(cimc/backend/stages/lowering.py), spread on a tie.

`duplicate` when nothing can be duplicated is an error, not a quiet spread: the weights
must all be resident (no streaming phases) with macros left over for at least one copy,
and a layer needs more than one token row to split.
"""

from __future__ import annotations

from cimc.backend.plan.streaming import StreamPlan
from cimc.errors import CimcError

MAPPINGS = ("spread", "duplicate", "pipeline")  # pipeline: cimc/backend/plan/pipeline.py


def check_mapping(mapping: str) -> None:
    if mapping not in (*MAPPINGS, "auto"):
        names = ", ".join((*MAPPINGS, "auto"))
        raise CimcError(f"unknown mapping {mapping!r}; use one of {names}", "map")


def check_duplicated(stream: StreamPlan, arch_name: str) -> None:
    """`mapping=duplicate` got at least one copy, else a one-line reason."""
    if stream.copies:
        return
    if stream.streamed:
        raise CimcError(
            f"mapping=duplicate needs every weight resident, but they stream through the "
            f"macros in {len(stream.phases)} phases on '{arch_name}'; use --mapping spread "
            f"or a larger arch",
            "map",
        )
    raise CimcError(
        f"mapping=duplicate found no layer to copy on '{arch_name}': no layer's tiles fit "
        f"the macros left free, or every layer has a single token row; use --mapping spread",
        "map",
    )


NOTE = "mapping"  # the header comments of a duplicated program start so (inspect/mapping.py)


def mapping_note(stream: StreamPlan) -> list[str]:
    """Header lines of a duplicated program (none for spread: its text stays as it was):
    the copies of each layer and the cores each copy runs on."""
    copies = stream.copies
    if not copies:
        return []
    cores: dict[tuple[str, int], set[int]] = {}
    for phase in stream.phases:
        for pt in phase.placement.tiles:
            if pt.tile.layer in copies:
                cores.setdefault((pt.tile.layer, pt.copy), set()).add(pt.core)
    lines = [f"{NOTE} duplicate: {len(copies)} layers duplicated"]
    for layer, n in copies.items():
        groups = " | ".join(",".join(map(str, sorted(cores[(layer, c)]))) for c in range(n))
        lines.append(f"{NOTE} %{layer}: {n} copies on cores {groups}")
    return lines
