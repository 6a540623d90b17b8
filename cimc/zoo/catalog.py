"""The built-in example models by name (no torch import: the CLI lists them in --help)."""

from __future__ import annotations

from dataclasses import dataclass

ONNX_EXPORTERS = ("legacy", "dynamo")


@dataclass(frozen=True)
class Example:
    family: str
    preset: str
    head: str
    exporter: str
    zeros: float = 0.0  # > 0: FFN biases shifted to this share of zero activations (relu_lm)


EXAMPLES: dict[str, Example] = {
    "bert-tiny": Example("bert", "tiny", "hidden", "dynamo"),
    "distilbert-tiny": Example("distilbert", "tiny", "hidden", "dynamo"),
    "gpt2-tiny": Example("gpt2", "tiny", "lm", "dynamo"),
    # OPT-style: ReLU FFNs with 90% zero activations (cimc generate --sparsity exact)
    "opt-relu-tiny": Example("gpt2", "relu", "lm", "dynamo", zeros=0.9),
    "llama-tiny": Example("llama", "tiny", "lm", "dynamo"),
    "qwen2-tiny": Example("qwen2", "tiny", "lm", "dynamo"),
}
