"""What a sweep leaves in its folder, read back from the study: one row per trial (CSV),
the Pareto front and each knob's sensitivity.

Rows come from the storage, not from this run's results, so a resumed sweep's table holds
every trial of the study, in trial order.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cimc.errors import CimcError
from cimc.sweep.trial import METRICS, OBJECTIVES

MAX_BINS = 5  # a range knob's values are cut into at most this many quantile bins


@dataclass(frozen=True)
class Row:
    number: int
    state: str  # "complete", "fail"
    params: dict[str, Any]
    metrics: dict[str, float]
    bit_exact: bool | None
    error: str

    @property
    def ok(self) -> bool:
        return self.state == "complete"


def study_rows(study: Any, knobs: list[str]) -> list[Row]:
    """Every finished trial of the study, in trial order."""
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if not t.state.is_finished():
            continue
        attrs = t.user_attrs
        rows.append(
            Row(
                number=t.number,
                state=t.state.name.lower(),
                params={k: t.params.get(k) for k in knobs},
                metrics={m: attrs[m] for m in METRICS if m in attrs},
                bit_exact=attrs.get("bit_exact"),
                error=attrs.get("error", ""),
            )
        )
    return rows


def write_csv(rows: list[Row], knobs: list[str], path: Path) -> Path:
    header = ["trial", "state", *knobs, *METRICS, "bit_exact", "error"]
    try:
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            for r in rows:
                bit = "" if r.bit_exact is None else str(r.bit_exact).lower()
                values = [r.metrics.get(m, "") for m in METRICS]
                writer.writerow(
                    [r.number, r.state, *(r.params[k] for k in knobs), *values, bit, r.error]
                )
    except OSError as e:
        raise CimcError(f"cannot write the table: {e.strerror or e}", str(path)) from None
    return path


def pareto_front(rows: list[Row], objectives: tuple[str, ...]) -> list[Row]:
    """The completed trials no other completed trial dominates (all objectives minimized),
    in trial order; trials with equal objectives are all kept."""
    points = [(r, [r.metrics[OBJECTIVES[o]] for o in objectives]) for r in rows if r.ok]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    return [r for r, p in points if not any(dominates(q, p) for _, q in points)]


def sensitivity(
    rows: list[Row], knobs: list[str], objectives: tuple[str, ...]
) -> dict[str, dict[str, float]]:
    """objective -> knob -> the share of the objective's variance its values explain (the
    correlation ratio eta^2 = between-group variance / total variance, groups = the knob's
    values, or quantile bins of a range knob), over completed trials. 0: the objective does
    not change with the knob; 1: the knob alone decides it."""
    done = [r for r in rows if r.ok]
    out: dict[str, dict[str, float]] = {}
    for objective in objectives:
        values = [r.metrics[OBJECTIVES[objective]] for r in done]
        out[objective] = {k: _eta_squared([r.params[k] for r in done], values) for k in knobs}
    return out


def most_sensitive(table: dict[str, dict[str, float]]) -> dict[str, str]:
    """objective -> the knob that explains most of its variance ("" when none varies)."""
    return {
        o: max(by_knob, key=lambda k: (by_knob[k], k)) if any(by_knob.values()) else ""
        for o, by_knob in table.items()
    }


def _eta_squared(levels: list[Any], values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    groups = _groups(levels)
    mean = sum(values) / len(values)
    total = sum((v - mean) ** 2 for v in values)
    if total <= 0:
        return 0.0
    by_group: dict[Any, list[float]] = defaultdict(list)
    for g, v in zip(groups, values, strict=True):
        by_group[g].append(v)
    between = sum(len(vs) * (sum(vs) / len(vs) - mean) ** 2 for vs in by_group.values())
    return between / total


def _groups(levels: list[Any]) -> list[Any]:
    """The values themselves when few and discrete; quantile bins of numeric values else."""
    distinct = sorted(set(levels), key=str)
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in levels)
    if len(distinct) <= MAX_BINS or not numeric:
        return levels
    ordered = sorted(levels)
    edges = [ordered[math.floor(i * len(ordered) / MAX_BINS)] for i in range(1, MAX_BINS)]
    return [sum(v >= e for e in edges) for v in levels]
