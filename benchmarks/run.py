"""The benchmark suite (issue 8): compile time, memory and schedule figures in one table.

For a BERT-base-size model (hidden 768, 12 heads, ffn 3072, seq 128, random weights) at
each `--layers` count, a fresh subprocess imports it (torch.export) and runs
`backend_bench.measure` for each `--arch`: compile time (passes + backend), peak RSS over
the compile alone (the kernel's high-water mark is reset just before it), bit-exactness,
interpreter / golden time, makespan / workload lower bound, macro cell utilization and
weight bytes loaded / weight bytes. Compile time is then fitted against the layer count
(least squares line, and the per-layer slope between successive sizes). Last, energy of one
768 -> 3072 int8 linear (batch = seq len) on the `zigzag-dimc` preset, from zigzag-dse
and from cimc (the program cimc compiles, and benchmarks/zigzag_compare.py's hand-written
one); zigzag-dse is optional (`pip install zigzag-dse six`).

    python benchmarks/run.py --quick                 # 1 and 2 layers at seq 32, a few minutes
    python benchmarks/run.py --layers 2 --arch default large
    python benchmarks/run.py [--json]                # 2, 4, 8, 12 layers: the full table
    python benchmarks/run.py --layers 1 --cnn resnet18 --no-zigzag   # + the CNN row

`--cnn resnet18` adds ResNet-18 (cimc/zoo/cnn.py, random weights and batch-norm statistics)
at 224x224, measured the same way (`--cnn tiny`: its small variant, a quick check).
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

FULL_LAYERS, QUICK_LAYERS = (2, 4, 8, 12), (1, 2)
TARGET_TEXT = {
    "interp_ratio": "<= 2x",
    "schedule_quality": "<= 1.15",
    "utilization": ">= 90%",
    "loaded": "<= 1.05x",
}
MIB = 1 << 20
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class CompilePeak(cProfile.Profile):
    """Peak RSS over the compile alone: `measure` brackets exactly the compile with the
    profiler's enable()/disable(), so this 'profiler' resets the high-water mark there."""

    def __init__(self) -> None:
        super().__init__()
        self.start_mib = self.peak_mib = 0.0
        self.reset_worked = False

    def enable(self, *args: Any, **kwargs: Any) -> None:
        self.start_mib = _status_kib("VmRSS") / 1024
        try:  # Linux >= 4.0: "5" resets VmHWM (and ru_maxrss) to the current RSS
            Path("/proc/self/clear_refs").write_text("5")
            self.reset_worked = _status_kib("VmHWM") / 1024 <= self.start_mib * 1.01 + 1
        except OSError:
            self.reset_worked = False

    def disable(self) -> None:
        self.peak_mib = _status_kib("VmHWM") / 1024


def _status_kib(field: str) -> int:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:  # not Linux: ru_maxrss is the whole process's peak
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def worker(layers: int, archs: list[str], seq_len: int, seed: int) -> dict[str, Any]:
    """One model size, measured in this (fresh) process; printed as one JSON line."""
    import backend_bench as bb
    import torch

    torch.set_num_threads(1)  # the ratios are quoted single-threaded on both sides
    started = time.perf_counter()
    graph = bb.bert_graph(layers, seq_len, "torch")
    import_s = time.perf_counter() - started
    float_bytes = sum(v.nbytes for v in graph.constants().values())
    rows = []
    for name in archs:
        peak = CompilePeak()
        row = bb.measure(graph, name, layers, import_s, seed, peak)
        rows.append(
            {
                **row.as_json(),
                "compile_rss_start_mib": peak.start_mib,
                "compile_peak_rss_mib": peak.peak_mib,
                "peak_is_compile_only": peak.reset_worked,
            }
        )
    return {"layers": layers, "seq_len": seq_len, "float_weight_bytes": float_bytes, "rows": rows}


def cnn_worker(size: str, archs: list[str], seed: int) -> dict[str, Any]:
    """The CNN row, measured in this (fresh) process; printed as one JSON line."""
    import backend_bench as bb
    import torch

    from cimc.api import import_model
    from cimc.zoo.cnn import build_cnn, cnn_input

    torch.set_num_threads(1)
    started = time.perf_counter()
    model = build_cnn("resnet", size)
    graph = import_model(model, example_inputs=(cnn_input(model),))
    import_s = time.perf_counter() - started
    rows = [bb.measure(graph, name, 0, import_s, seed).as_json() for name in archs]
    return {"cnn": f"resnet:{size}", "image": model.image, "rows": rows}


def run_cnn(size: str, archs: list[str], seed: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--cnn-worker", size, "--arch", *archs, "--seed", str(seed)]
    env = {**os.environ, **{k: "1" for k in THREAD_VARS}}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"cnn": size, "error": f"exit {proc.returncode}: {tail}", "rows": []}
    return dict(json.loads(lines[-1]))


def _cnn_lines(cnn: dict[str, Any] | None) -> list[str]:
    if cnn is None:
        return []
    if cnn.get("error"):
        return [f"CNN {cnn['cnn']}: FAILED {cnn['error']}"]
    lines = [f"CNN {cnn['cnn']} at {cnn['image']}x{cnn['image']}:"]
    for r in cnn["rows"]:
        lines.append(
            f"  {r['arch']:<9} compile {r['compile_s']:.1f} s, "
            f"{'bit-exact' if r['bit_exact'] else 'NOT bit-exact'}, makespan/bound "
            f"{r['schedule_quality']:.3f}, utilization {r['utilization']:.1%}, loaded/weights "
            f"{r['loaded_ratio']:.3f}x ({r['bytes_loaded']:,} / {r['weight_bytes']:,} bytes)"
        )
    return lines


def run_size(layers: int, archs: list[str], seq_len: int, seed: int) -> dict[str, Any]:
    """`worker` in a subprocess, so each size's peak memory starts from a clean process."""
    cmd = [sys.executable, __file__, "--worker", str(layers), "--arch", *archs]
    cmd += ["--seq-len", str(seq_len), "--seed", str(seed)]
    env = {**os.environ, **{k: "1" for k in THREAD_VARS}}  # numpy side single-threaded too
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"layers": layers, "error": f"exit {proc.returncode}: {tail}", "rows": []}
    return dict(json.loads(lines[-1]))


def fit(xs: list[float], ys: list[float]) -> dict[str, Any] | None:
    """Least squares y = a + b x with R^2, and the slope of each segment between sizes:
    a linear cost has a high R^2 and segment slopes that do not grow with x."""
    points = sorted(zip(xs, ys, strict=True))
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    intercept = my - slope * mx
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in points)
    ss_tot = sum((y - my) ** 2 for _, y in points)
    segments = [(y1 - y0) / (x1 - x0) for (x0, y0), (x1, y1) in pairwise(points) if x1 > x0]
    r2 = 1 - ss_res / ss_tot if ss_tot else 1.0
    # the slope above the middle size over the slope below it (wide spans: less noise)
    (x0, y0), (xm, ym), (x1, y1) = points[0], points[n // 2], points[-1]
    low = (ym - y0) / (xm - x0) if xm > x0 else 0.0
    growth = ((y1 - ym) / (x1 - xm)) / low if x1 > xm and low > 0 else float("inf")
    linear = (r2 >= 0.98 and growth <= 1.5) if n >= 3 else None  # two points fit any line
    return {"intercept": intercept, "slope": slope, "r2": r2, "segment_slopes": segments,
            "growth": growth,
            "linear": linear}  # fmt: skip


def zigzag_energy(batch: int) -> dict[str, Any]:
    """zigzag-dse vs cimc (compiled and hand-written) on one 768 -> 3072 int8 linear."""
    import zigzag_compare as zc

    compiled = compiled_linear(batch)
    hand = zc.hand(batch)
    out: dict[str, Any] = {
        "batch": batch,
        "cimc_compiled_uj": compiled["energy_uj"],
        "cimc_compiled_cycles": compiled["cycles"],
        "cimc_hand_uj": hand.energy_uj,
        "cimc_hand_cycles": hand.makespan_cycles,
    }
    if importlib.util.find_spec("zigzag") is None:
        return {**out, "zigzag": "zigzag-dse not installed (pip install zigzag-dse six)"}
    from cimc.machine.arch import load_arch

    zz = zc.zigzag(zc.LAYERS[0].zigzag(batch), load_arch("zigzag-dimc"))
    return {**out, "zigzag_uj": float(zz["energy_pj"]) / 1e6, "zigzag_cycles": zz["cycles"]}  # type: ignore[arg-type]


def compiled_linear(batch: int) -> dict[str, Any]:
    """The same layer as a torch Linear, compiled by cimc for zigzag-dimc and costed."""
    import contextlib
    import io

    import torch

    from cimc.api import import_model
    from cimc.machine.arch import load_arch
    from cimc.machine.summary import summarize
    from cimc.pipeline import compile_model

    torch.manual_seed(0)
    linear = torch.nn.Linear(768, 3072)
    graph = import_model(linear, example_inputs=(torch.randn(1, batch, 768),))
    arch = load_arch("zigzag-dimc")
    with contextlib.redirect_stderr(io.StringIO()):  # the calibration note
        compiled = compile_model(graph, arch).compiled
    summary = summarize(compiled.program, arch)
    return {"energy_uj": summary.energy_uj, "cycles": summary.makespan_cycles}


def suite(args: argparse.Namespace) -> dict[str, Any]:
    sizes = []
    for layers in args.layers:  # one process per arch too: RSS never shrinks back
        runs = [run_size(layers, [arch], args.seq_len, args.seed) for arch in args.arch]
        errors = "; ".join(r["error"] for r in runs if r.get("error"))
        size = {**runs[0], "rows": [row for r in runs for row in r["rows"]]}
        sizes.append({**size, "error": errors} if errors else size)
        print(f"done {layers} layers", file=sys.stderr, flush=True)
    fits = {}
    for arch in args.arch:
        points = [(s["layers"], r["compile_s"]) for s in sizes for r in s["rows"]
                  if r["arch"] == arch]  # fmt: skip
        fits[arch] = fit([float(p[0]) for p in points], [p[1] for p in points])
    energy = None if args.no_zigzag else zigzag_energy(args.zigzag_batch or args.seq_len)
    cnn = run_cnn(args.cnn, args.arch, args.seed) if args.cnn else None
    return {"sizes": sizes, "compile_fit": fits, "energy": energy, "cnn": cnn}


def _ok(met: bool) -> str:
    return "ok" if met else "MISS"


def format_table(result: dict[str, Any]) -> str:
    head = (
        f"{'arch':<9}{'L':>3}{'compile s':>10}{'peak MiB':>9}{'/f32 w':>7}{'exact':>6}"
        f"{'interp/golden':>18}{'makespan/bound':>19}{'util':>12}{'loaded/w':>14}"
    )
    lines = [head, "-" * len(head)]
    for size in result["sizes"]:
        if size.get("error"):
            lines.append(f"{'-':<9}{size['layers']:>3}  FAILED {size['error']}")
        for r in size["rows"]:
            lines.append(_row_line(size, r))
    lines.append(
        f"{'targets':<12}{'':34}{TARGET_TEXT['interp_ratio']:>18}"
        f"{TARGET_TEXT['schedule_quality']:>19}{TARGET_TEXT['utilization']:>12}"
        f"{TARGET_TEXT['loaded']:>14}"
    )
    lines.append("peak MiB: RSS high-water mark during the compile minus RSS before it")
    for arch, f in result["compile_fit"].items():
        lines.append(_fit_line(arch, f))
    lines.append(_energy_line(result["energy"]))
    lines += _cnn_lines(result.get("cnn"))
    return "\n".join(lines)


def _row_line(size: dict[str, Any], r: dict[str, Any]) -> str:
    met = r["targets_met"]
    grown = r["compile_peak_rss_mib"] - r["compile_rss_start_mib"]
    note = "" if r["peak_is_compile_only"] else "*"
    ratio = grown * MIB / size["float_weight_bytes"]
    return (
        f"{r['arch']:<9}{r['layers']:>3}{r['compile_s']:>10.1f}{grown:>8.0f}{note:1}"
        f"{ratio:>7.2f}{'yes' if r['bit_exact'] else 'NO':>6}"
        f"{r['interp_ratio']:>13.2f}x {_ok(met['interp_ratio']):>4}"
        f"{r['schedule_quality']:>14.3f} {_ok(met['schedule_quality']):>4}"
        f"{r['utilization']:>7.1%} {_ok(met['utilization']):>4}"
        f"{r['loaded_ratio']:>9.3f}x {_ok(met['loaded']):>4}"
    )


def _fit_line(arch: str, f: dict[str, Any] | None) -> str:
    if f is None:
        return f"compile time vs layers ({arch}): needs two or more sizes"
    segments = ", ".join(f"{v:.2f}" for v in f["segment_slopes"])
    verdict = {True: "linear", False: "NOT linear (R^2 < 0.98 or s/layer grows > 1.5x)",
               None: "three or more sizes needed for a verdict"}[f["linear"]]  # fmt: skip
    return (
        f"compile time vs layers ({arch}): {f['intercept']:.2f} s + {f['slope']:.2f} s/layer, "
        f"R^2 {f['r2']:.4f}, s/layer between sizes {segments} (upper/lower half "
        f"{f['growth']:.2f}) -> {verdict}"
    )


def _energy_line(e: dict[str, Any] | None) -> str:
    if e is None:
        return "energy vs zigzag-dse: skipped (--no-zigzag)"
    cimc = (
        f"cimc compiled {e['cimc_compiled_uj']:.1f} uJ / {e['cimc_compiled_cycles']:,} cycles, "
        f"hand-written {e['cimc_hand_uj']:.1f} uJ / {e['cimc_hand_cycles']:,} cycles"
    )
    head = f"energy, 768->3072 int8 linear x{e['batch']} on zigzag-dimc: {cimc}"
    if "zigzag_uj" not in e:
        return f"{head}; {e['zigzag']}"
    zz = e["zigzag_uj"]
    return (
        f"{head}; zigzag-dse {zz:.1f} uJ / {float(e['zigzag_cycles']):,.0f} cycles "
        f"(compiled/zigzag {e['cimc_compiled_uj'] / zz:.2f}, hand/zigzag "
        f"{e['cimc_hand_uj'] / zz:.2f})"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, nargs="+", help="default 2 4 8 12 (--quick: 1 2)")
    ap.add_argument("--arch", nargs="+", default=["default"])
    ap.add_argument("--seq-len", type=int, help="default 128 (--quick: 32)")
    ap.add_argument("--quick", action="store_true", help="small run: 1 and 2 layers, seq 32")
    ap.add_argument("--zigzag-batch", type=int, help="rows of the linear (default: seq len)")
    ap.add_argument("--no-zigzag", action="store_true", help="skip the energy comparison")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--cnn", choices=["resnet18", "tiny"], help="add the ResNet CNN row")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--cnn-worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.seq_len = args.seq_len or (32 if args.quick else 128)
    if args.cnn_worker is not None:
        print(json.dumps(cnn_worker(args.cnn_worker, args.arch, args.seed)))
        return 0
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.arch, args.seq_len, args.seed)))
        return 0
    args.layers = args.layers or list(QUICK_LAYERS if args.quick else FULL_LAYERS)
    result = suite(args)
    print(json.dumps(result, indent=1) if args.json else format_table(result))
    failed = any(s.get("error") for s in result["sizes"]) or (result["cnn"] or {}).get("error")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
