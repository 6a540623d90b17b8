"""Host memory of the compiler on large models: peak RSS per parameter of the whole process.

    python benchmarks/compile_memory.py --model bert-base                # cimc compile, B/param
    python benchmarks/compile_memory.py --model llama-1b --generate      # + cimc generate
    python benchmarks/compile_memory.py --model bert-base --cimc-root /tmp/cimc-base

The model is exported once (random weights, `torch.onnx.export(dynamo=True)`, weights in
external data) into `--cache` and reused. `cimc compile` (and with --generate, `cimc
generate --prompt-ids ... --max-new-tokens 2`) then runs in a fresh process of the
checkout at `--cimc-root` (default: this one): its peak resident set (the kernel's
ru_maxrss of the child, file-backed pages it has mapped included), wall time and exit
status are measured. A watchdog kills a child whose RSS passes --rss-limit-gib, so a run
never pushes the machine into swap. Parameters are the float initializer elements of
the ONNX file.

Models: `bert-base` (12 layers, hidden 768, ffn 3072, vocab 30522; compiled at seq 128) and
`llama-1b` (the TinyLlama shape: 22 layers, hidden 2048, intermediate 5632, 32 heads,
4 KV heads, vocab 32000; compiled at seq 8, generated from a 4-token prompt).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GIB = 1 << 30
MODELS: dict[str, dict[str, Any]] = {
    "bert-base": {"family": "bert", "preset": "base", "head": "hidden", "overrides": {}},
    "llama-1b": {
        "family": "llama",
        "preset": "tiny",
        "head": "lm",
        "overrides": {
            "hidden_size": 2048,
            "intermediate_size": 5632,
            "num_hidden_layers": 22,
            "num_attention_heads": 32,
            "num_key_value_heads": 4,
            "vocab_size": 32000,
            "max_position_embeddings": 2048,
        },
    },
}
SEQ_LEN = {"bert-base": 128, "llama-1b": 8}
PROMPT = "1,2,3,4"


@dataclass(frozen=True)
class Run:
    command: str
    exit_code: int
    wall_s: float
    peak_rss_bytes: int
    killed_by_watchdog: bool


def export(name: str, cache: Path) -> Path:
    """The model's ONNX file in `cache` (exported on first use, weights in external data)."""
    path = cache / name / f"{name}.onnx"
    if path.is_file():
        return path
    sys.path.insert(0, str(ROOT))
    import torch

    from cimc.zoo import build_model, example_inputs

    spec = MODELS[name]
    model = build_model(spec["family"], spec["preset"], spec["head"], **spec["overrides"])
    inputs = example_inputs(model, seq_len=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            inputs,
            dynamo=True,
            input_names=["input_ids", "attention_mask"],
            output_names=["output"],
            dynamic_shapes={n: {1: torch.export.Dim("seq", max=64)}
                            for n in ("input_ids", "attention_mask")},
        )  # fmt: skip
        assert program is not None
        program.save(str(path), external_data=True)
    return path


def parameters(path: Path) -> int:
    """Float initializer elements of the ONNX file (its external data is not read)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    total = 0
    for t in model.graph.initializer:
        if t.data_type in floats:
            count = 1
            for d in t.dims:
                count *= int(d)
            total += count
    return total


def measure(args: list[str], cimc_root: Path, limit_bytes: int, stdout: Path) -> Run:
    """`python -m cimc ARGS` in a fresh process (its output to `stdout`): peak RSS, wall
    time, exit code."""
    env = {**os.environ, "PYTHONPATH": str(cimc_root)}
    cmd = [sys.executable, "-m", "cimc", *args]
    started = time.perf_counter()
    with stdout.open("w") as sink:
        proc = subprocess.Popen(cmd, env=env, cwd=cimc_root, stdout=sink)
        killed = threading.Event()
        watchdog = threading.Thread(target=_watch, args=(proc, limit_bytes, killed), daemon=True)
        watchdog.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    line = " ".join(["cimc", *args])
    return Run(line, proc.returncode, wall, usage.ru_maxrss * 1024, killed.is_set())


def _watch(proc: subprocess.Popen, limit_bytes: int, killed: threading.Event) -> None:
    status = Path(f"/proc/{proc.pid}/status")
    while proc.returncode is None:
        try:
            text = status.read_text()
        except OSError:
            return
        for line in text.splitlines():
            if line.startswith("VmRSS:") and int(line.split()[1]) * 1024 > limit_bytes:
                killed.set()
                proc.kill()
                return
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="bert-base")
    ap.add_argument("--arch", default="default")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/cimc-bench-models"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/cimc-bench-out"))
    ap.add_argument("--cimc-root", type=Path, default=ROOT, help="checkout to measure")
    ap.add_argument("--generate", action="store_true", help="also run cimc generate")
    ap.add_argument("--no-compile", action="store_true", help="only run cimc generate")
    ap.add_argument("--float", action="store_true", help="generate with the float model too")
    ap.add_argument("--rss-limit-gib", type=float, default=16.0)
    ap.add_argument("--export-only", action="store_true", help="export the model and stop")
    args = ap.parse_args(argv)
    path = export(args.model, args.cache)
    if args.export_only:
        print(path)
        return 0
    params = parameters(path)
    args.out.mkdir(parents=True, exist_ok=True)
    limit = int(args.rss_limit_gib * GIB)
    runs = []
    if not args.no_compile:
        out = args.out / f"{args.model}.cimasm"
        cmd = ["compile", str(path), "--arch", args.arch, "--seq-len", str(SEQ_LEN[args.model])]
        log = args.out / f"{args.model}.compile.txt"
        runs.append(measure([*cmd, "-o", str(out), "--quiet"], args.cimc_root, limit, log))
    if args.generate or args.no_compile:
        cmd = ["generate", str(path), "--arch", args.arch, "--prompt-ids", PROMPT]
        cmd += ["--max-new-tokens", "2", "--json", "--quiet"]
        cmd += [] if args.float else ["--no-float"]
        log = args.out / f"{args.model}.generate.json"
        runs.append(measure(cmd, args.cimc_root, limit, log))
        if runs[-1].exit_code in (0, 1):
            report = json.loads(log.read_text())
            print(f"generate: tokens {report['tokens']}, bit-exact {report['bit_exact']}")
    for r in runs:
        per = r.peak_rss_bytes / params
        state = "killed by the watchdog" if r.killed_by_watchdog else f"exit {r.exit_code}"
        print(
            f"{r.command}\n  {state}, {r.wall_s:.1f} s, peak RSS {r.peak_rss_bytes / GIB:.2f} GiB "
            f"= {per:.2f} bytes per parameter ({params:,} parameters)"
        )
    print(json.dumps({"model": args.model, "parameters": params,
                      "runs": [asdict(r) for r in runs]}))  # fmt: skip
    return 0 if all(r.exit_code == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
