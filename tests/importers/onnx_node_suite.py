"""ONNX's own backend node tests (`onnx.backend.test.case.node`) through cimc's importer
and float reference: each case passes, or is refused for one of the reasons listed in
`REFUSALS` (cimc's documented limits), never a wrong answer or a crash.

    python -m tests.importers.onnx_node_suite      # the counts, and the refusals by reason
"""

from __future__ import annotations

import re
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from cimc.errors import CimcError

# Why a case may be refused: the CimcError message matches one of these, one limit each.
REFUSALS: dict[str, str] = {
    "op cimc does not translate": r"unsupported ONNX op ",
    "domain other than ai.onnx (training, ai.onnx.ml)": r"imports no default-domain",
    "opset outside the supported range": r"opset \d+ is not supported",
    "dtype cimc does not take (float64/16, uint, float8, string...)": (
        r"tensors of type \w+ are not supported at run time|on (float|bool) tensors only"
    ),
    "sequence or optional value": r"is not a tensor",
    "empty tensor": r"is empty; cimc compiles non-empty tensors",
    "run-time value where cimc needs a constant (shapes, axes, weights, indices)": (
        r"must be a constant|needs (a )?constant|is supported with a run-time \w+ and a "
        r"constant|with run-time indices into run-time data"
    ),
    "training-mode output or behaviour": r"training mode|mask output|Indices output",
    "pooling window past the input (ceil_mode)": r"ceil_mode=\d with a partial last window",
    "windows over 3 or more spatial axes": r"must be \[B, C, L\] or \[B, C, H, W\]",
    "matmul of a vector (rank 1)": r"matmul operands must have rank >= 2",
    "control flow that does not fold (If, Loop)": r"cannot fold (If|Loop|Scan)",
    "IsNaN outside the softmax guard": r"IsNaN",
}


@dataclass(frozen=True)
class Outcome:
    name: str
    kind: str  # "pass", "refused", "wrong", "crash"
    detail: str = ""


def cases() -> list[Any]:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(collect_testcases(None))


def reason(message: str) -> str | None:
    """The REFUSALS key a refusal message falls under, or None (an unlisted reason)."""
    return next((k for k, pattern in REFUSALS.items() if re.search(pattern, message)), None)


def run_case(case: Any, folder: Path) -> Outcome:
    from cimc.api import import_model
    from cimc.reference.float_model import run_graph

    path = folder / f"{case.name}.onnx"
    onnx.save(case.model, str(path))
    try:
        results = []
        for inputs, outputs in case.data_sets:
            feeds = _feeds(case.model, inputs)
            shapes = {k: tuple(v.shape) for k, v in feeds.items() if isinstance(v, np.ndarray)}
            graph = import_model(str(path), shapes=shapes)
            got = run_graph(graph, {n.name: feeds[n.name] for n in graph.input_nodes()})
            results.append(_compare(case, got, graph, outputs))
        bad = next((r for r in results if r), "")
        return Outcome(case.name, "wrong", bad) if bad else Outcome(case.name, "pass")
    except CimcError as e:
        return Outcome(case.name, "refused", str(e))
    except Exception as e:  # noqa: BLE001 - the point is to count them
        return Outcome(case.name, "crash", f"{type(e).__name__}: {e}")


def _feeds(model: onnx.ModelProto, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    weights = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in weights]
    return dict(zip(names, inputs, strict=False))  # sequences stay lists: cimc refuses them


def _compare(case: Any, got: dict[str, np.ndarray], graph: Any, outputs: list[Any]) -> str:
    names = [o.name for o in case.model.graph.output]
    for name, want in zip(names, outputs, strict=False):
        if name not in got:
            return f"output {name} missing"
        g, w = np.asarray(got[name]), np.asarray(want)
        if g.shape != w.shape:
            return f"output {name}: shape {g.shape} != {w.shape}"
        if w.dtype.kind in "fc":
            rtol, atol = max(case.rtol, 1e-4), max(case.atol, 1e-5)
            close = np.allclose(g.astype(np.float64), w, rtol=rtol, atol=atol, equal_nan=True)
            if not close:
                return f"output {name}: values differ (max {np.abs(g - w).max():.3g})"
        elif not np.array_equal(g.astype(w.dtype), w):
            return f"output {name}: values differ"
    return ""


def run_all() -> list[Outcome]:
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [run_case(c, Path(tmp)) for c in cases()]


def main() -> None:
    outcomes = run_all()
    print(Counter(o.kind for o in outcomes))
    refused = Counter(reason(o.detail) for o in outcomes if o.kind == "refused")
    print(refused)
    for o in outcomes:
        if o.kind != "pass":
            print(o.kind, o.name, o.detail[:200])


if __name__ == "__main__":
    main()
