"""The same programs scheduled by this checkout's cost model and by another revision's: how
a change to the schedule (cimc/machine/schedule.py) moves every makespan.

    python benchmarks/schedule_compare.py --against ee7115c
    python benchmarks/schedule_compare.py --against ee7115c --flash     # + LLaMA in flash

Programs are compiled once, by this checkout (compiling does not use the schedule), from
random-weight zoo models: BERT-base dims (2 layers, seq 128) on `default` and `large`,
and the tiny and odd presets of bert, gpt2, llama and t5 on `tiny`, `default` and `large`.
With --flash also the decode step of flash_bench's LLaMA 4 x 512 with DRAM for 1/8 and all
of its weights (its weights partly in flash). The other revision's schedule.py is read with
`git show REV:cimc/machine/schedule.py` and imported beside this one (the rest of
cimc/machine is this checkout's: the comparison is meaningful while the two share their
cost functions). Prints one line per program: both makespans and their ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
CASES: tuple[tuple[str, dict[str, Any], int, tuple[str, ...]], ...] = (
    ("bert", {"preset": "base", "num_hidden_layers": 2}, 128, ("default", "large")),
    ("bert", {}, 32, ("tiny", "default", "large")),
    ("gpt2", {}, 32, ("tiny", "default", "large")),
    ("gpt2", {"preset": "odd"}, 64, ("tiny", "default", "large")),
    ("llama", {"preset": "odd"}, 32, ("tiny", "default", "large")),
    ("t5", {}, 16, ("tiny", "default")),
)


def schedule_at(revision: str) -> ModuleType:
    shown = subprocess.run(
        ["git", "show", f"{revision}:cimc/machine/schedule.py"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    if shown.returncode != 0:
        raise SystemExit(f"error: --against {revision}: {shown.stderr.strip().splitlines()[-1]}")
    text = shown.stdout
    path = Path(tempfile.mkdtemp()) / f"schedule_{revision}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


def zoo_programs() -> Any:
    from cimc.machine.arch import load_arch
    from cimc.pipeline import PipelineOptions, compile_model
    from cimc.zoo import build_model, example_inputs
    from cimc.zoo.export import export_torch

    for family, overrides, seq, archs in CASES:
        model = build_model(family, **overrides)
        exported = export_torch(model, example_inputs(model, seq_len=seq))
        for name in archs:
            arch = load_arch(name)
            result = compile_model(exported, arch, PipelineOptions(seq_len=seq))
            label = f"{family} {overrides.get('preset', 'tiny')} seq {seq}"
            yield f"{label} on {name}", result.compiled.program, arch


def flash_programs() -> Any:
    from benchmarks.flash_bench import build, with_dram
    from cimc.decode.programs import build_decoder, load_decoder, shared_reserve
    from cimc.decode.report import model_weight_bytes
    from cimc.decode.specialize import specialize
    from cimc.machine.arch import load_arch

    args = argparse.Namespace(layers=4, hidden=512, intermediate=1408, vocab=4096)
    exported, base, prompt = build(args), load_arch("default"), 4
    loaded = load_decoder(exported, prompt + 2)
    graphs = [specialize(loaded.qgraph, loaded.axes, n) for n in (prompt, 1)]
    weights, other = model_weight_bytes(loaded.qgraph), shared_reserve(graphs, base)
    for fraction in (0.125, 1.0):
        arch = with_dram(base, other + int(fraction * weights))
        progs = build_decoder(exported, arch, prompt, loaded.capacity, loaded=loaded)
        program = progs.warm.warm if progs.warm is not None else progs.decode.program
        yield f"llama 4x512 decode, DRAM {fraction:g} x weights", program, arch


def main() -> int:
    from cimc.machine import schedule

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--against", required=True, help="git revision of the other schedule")
    p.add_argument("--flash", action="store_true", help="add LLaMA decode with flash")
    args = p.parse_args()
    other = schedule_at(args.against)
    warnings.simplefilter("ignore")
    sources = [zoo_programs()] + ([flash_programs()] if args.flash else [])
    print(f"| program | {args.against} cycles | this checkout | ratio |\n|---|---|---|---|")
    for source in sources:
        for label, program, arch in source:
            before = other.simulate(program, arch).makespan
            now = schedule.simulate(program, arch).makespan
            print(f"| {label} | {before:,} | {now:,} | {now / before:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
