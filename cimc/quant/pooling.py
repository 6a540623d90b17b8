"""The sentence-embedding view of an encoder's output: real tokens, and the pooled vector.

A sentence encoder is used through the mean of its last hidden states over the real
tokens (attention mask 1). Padding positions carry values nobody reads, so accuracy over
real tokens, and the cosine of the mean-pooled embedding, are the figures that matter:

    view = EmbeddingAgreement()
    view.add(ref[1, S, H], got[1, S, H], mask[1, S])       # per sample
    view.tokens.cosine, view.min_pooled, view.mean_pooled
"""

from __future__ import annotations

import numpy as np

from cimc.ir.graph import Graph
from cimc.ir.ops import Input
from cimc.quant.accuracy import Agreement, cosine

MASK_MEANING = "attention_mask"


def attention_mask_input(graph: Graph) -> str | None:
    """The graph input holding the attention mask (by its meaning), or None."""
    for node in graph.input_nodes():
        if isinstance(node.op, Input) and node.op.meaning == MASK_MEANING:
            return node.name
    return None


def token_states(shape: tuple[int, ...], mask_shape: tuple[int, ...]) -> bool:
    """Whether an output of `shape` holds one vector per masked position ([B, S, H])."""
    return len(shape) == 3 and len(mask_shape) == 2 and tuple(shape[:2]) == tuple(mask_shape)


def mean_pool(states: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over the real tokens of each sequence: [B, S, H], [B, S] -> [B, H]."""
    m = np.asarray(mask, np.float64)[..., None]
    total = (np.asarray(states, np.float64) * m).sum(axis=1)
    return total / np.maximum(m.sum(axis=1), 1.0)


class EmbeddingAgreement:
    """Agreement over real tokens, and the pooled embedding's cosine per sequence."""

    def __init__(self) -> None:
        self.tokens = Agreement()
        self.pooled: list[float] = []

    def add(self, ref: np.ndarray, got: np.ndarray, mask: np.ndarray) -> None:
        real = np.asarray(mask).astype(bool)
        self.tokens.add(np.asarray(ref)[real], np.asarray(got)[real])
        for r, g in zip(mean_pool(ref, mask), mean_pool(got, mask), strict=True):
            self.pooled.append(cosine(r, g))

    @property
    def min_pooled(self) -> float:
        return min(self.pooled, default=1.0)

    @property
    def mean_pooled(self) -> float:
        return float(np.mean(self.pooled)) if self.pooled else 1.0
