"""Export a Hugging Face model the ways users do, then compile, verify and plot it with cimc.

    python examples/export_hf.py bert                          # torch.onnx.export(dynamo=True)
    python examples/export_hf.py gpt2 --exporter legacy        # torch.onnx.export(dynamo=False)
    python examples/export_hf.py llama --exporter torch-export # torch.export.save -> .pt2
    python examples/export_hf.py --all -o out/                 # every family x every exporter

Families: bert, distilbert, gpt2, llama, qwen2. Without hub access the weights are random
(a small config); with it, replace `build` by `AutoModel.from_pretrained("bert-base-uncased")`
and the rest stays the same. Each run writes, under the output folder,
FAMILY-EXPORTER.onnx (or .pt2), the compiled .cimasm + .safetensors, verify.json and the
plots of `cimc report --plot`, and prints the cimc command line of every step.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from pathlib import Path
from typing import TextIO

import torch
import transformers
from torch import nn

from cimc.cli import main as cimc

SEQ = 8  # tokens traced at export; the sequence axis stays symbolic
# Small shapes of each family (a real checkpoint has its own config).
CONFIGS: dict[str, dict[str, int]] = {
    "bert": {"hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128},
    "distilbert": {"dim": 64, "n_heads": 4, "hidden_dim": 128},
    "gpt2": {"n_embd": 64, "n_head": 4, "n_positions": 64},
    "llama": {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
              "intermediate_size": 160},
    "qwen2": {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
              "intermediate_size": 160},
}  # fmt: skip
LAYERS = {"bert": "num_hidden_layers", "distilbert": "n_layers", "gpt2": "n_layer"}
DECODERS = ("gpt2", "llama", "qwen2")  # exported with their LM head (logits)
EXPORTERS = ("dynamo", "legacy", "torch-export")


class SingleOutput(nn.Module):
    """HF models return a ModelOutput; export one tensor: hidden states or logits."""

    def __init__(self, model: nn.Module, logits: bool) -> None:
        super().__init__()
        self.model, self.logits = model, logits

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return out.logits if self.logits else out.last_hidden_state


def build(family: str, layers: int) -> SingleOutput:
    """A random-weight model of `family` (what from_pretrained would give you)."""
    fields = {**CONFIGS[family], LAYERS.get(family, "num_hidden_layers"): layers}
    config = transformers.AutoConfig.for_model(family, vocab_size=512, **fields)
    config.use_cache = False  # no KV-cache outputs
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    auto = transformers.AutoModelForCausalLM if family in DECODERS else transformers.AutoModel
    return SingleOutput(auto.from_config(config).eval(), logits=family in DECODERS).eval()


INPUTS = ["input_ids", "attention_mask"]


def example_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randint(0, 512, (1, SEQ)), torch.ones((1, SEQ), dtype=torch.int64)


def symbolic_seq() -> dict[str, dict[int, torch.export.Dim]]:
    seq = torch.export.Dim("seq", min=2, max=64)
    return {"input_ids": {1: seq}, "attention_mask": {1: seq}}


def export_dynamo(model: nn.Module, path: Path) -> Path:
    """torch.onnx.export(..., dynamo=True): the default exporter since PyTorch 2.9."""
    onnx_program = torch.onnx.export(
        model, example_inputs(), dynamo=True, input_names=INPUTS, output_names=["output"],
        dynamic_shapes=symbolic_seq(),
    )  # fmt: skip
    assert onnx_program is not None
    onnx_program.save(str(path))
    return path


def export_legacy(model: nn.Module, path: Path) -> Path:
    """torch.onnx.export(..., dynamo=False): the TorchScript exporter many scripts still use."""
    axes = {"input_ids": {1: "seq"}, "attention_mask": {1: "seq"}}
    torch.onnx.export(
        model, example_inputs(), str(path), dynamo=False, input_names=INPUTS,
        output_names=["output"], dynamic_axes=axes, opset_version=17,
    )  # fmt: skip
    return path


def export_torch(model: nn.Module, path: Path) -> Path:
    """torch.export.export + torch.export.save: a .pt2 file cimc imports directly."""
    exported = torch.export.export(
        model, example_inputs(), dynamic_shapes=symbolic_seq(), strict=False
    )
    torch.export.save(exported, str(path))
    return path


def export(model: nn.Module, exporter: str, stem: Path) -> Path:
    """Export `model` the way `exporter` users write it; returns the file written."""
    with warnings.catch_warnings():  # exporter deprecation / tracer notices
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            return export_dynamo(model, stem.with_suffix(".onnx"))
        if exporter == "legacy":
            return export_legacy(model, stem.with_suffix(".onnx"))
        return export_torch(model, stem.with_suffix(".pt2"))


def step(*args: str, stdout: TextIO | None = None) -> None:
    """Run one cimc command in this process (its shell line is printed first)."""
    print("$ cimc " + " ".join(args), flush=True)
    with contextlib.redirect_stdout(stdout or sys.stdout):
        code = cimc(list(args))
    if code != 0:
        raise SystemExit(f"cimc {args[0]} failed with exit code {code}")


def run(family: str, exporter: str, out: Path, arch: str = "tiny", layers: int = 2) -> dict:
    """Export, compile, verify and plot one family; returns the verify report (JSON)."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{family}-{exporter}"
    model_file = export(build(family, layers), exporter, stem)
    print(f"exported {model_file} ({exporter})")
    program = str(stem.with_suffix(".cimasm"))
    common = ["--arch", arch, "--seq-len", str(SEQ)]
    step("compile", str(model_file), *common, "-o", program)
    report = stem.parent / f"{stem.name}.verify.json"
    with open(report, "w") as f:  # verify --json prints one JSON object
        step("verify", str(model_file), *common, "--json", stdout=f)
    step("report", program, "--plot", str(stem.parent / f"{stem.name}-plots"))
    result = json.loads(report.read_text())
    print(f"{family} via {exporter}: bit-exact {result['bit_exact']}, "
          f"cosine vs float {result['cosine_vs_float']:.5f}")  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", nargs="?", choices=sorted(CONFIGS))
    parser.add_argument("--exporter", choices=EXPORTERS, default="dynamo")
    parser.add_argument("--all", action="store_true", help="every family with every exporter")
    parser.add_argument("-o", "--output", type=Path, default=Path("hf-out"), help="folder")
    parser.add_argument("--arch", default="tiny", help="preset or FILE.toml (default tiny)")
    parser.add_argument("--layers", type=int, default=2, help="transformer blocks (default 2)")
    args = parser.parse_args(argv)
    if args.all == (args.family is not None):
        parser.error("give one FAMILY or --all")
    todo = [(f, e) for f in sorted(CONFIGS) for e in EXPORTERS] if args.all else [
        (args.family, args.exporter)]  # fmt: skip
    results = [run(f, e, args.output, args.arch, args.layers) for f, e in todo]
    return 0 if all(r["bit_exact"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
