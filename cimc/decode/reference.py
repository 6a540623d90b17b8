"""References of generation that have no KV cache at all.

The integer golden (cimc/quant/golden.py) and the float model run the capacity-C graph on
the whole token prefix, padded to C: causal attention makes row t independent of every
later row, so the padding never matters, and row t is what decode step t must produce.
This checks the cache machinery (appends, positions, masks) against a computation that
has none of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cimc.decode.programs import DecoderModel, check_ids
from cimc.errors import CimcError
from cimc.quant.golden import Golden
from cimc.quant.predictor import recall_counts, scored_layers
from cimc.reference.float_model import FloatModel

PAD_ID = 0  # any id of the vocabulary would do (see the module doc)


class PrefixReference:
    """Logits rows of a token prefix from the integer golden or the float model."""

    def __init__(self, dm: DecoderModel, kind: str) -> None:
        if kind not in ("golden", "float"):
            raise CimcError(f"unknown reference {kind!r}", "decode")
        self.dm = dm
        self.kind = kind
        self._golden = Golden(dm.qgraph) if kind == "golden" else None
        self._scored = bool(scored_layers(dm.qgraph)) and kind == "golden"
        self.last_recall: dict[str, tuple[int, int]] = {}  # of the last rows() (predictors)
        self._float = FloatModel(dm.float_graph) if kind == "float" else None
        (self._out, value) = dm.qgraph.outputs[0]
        (self._axis,) = dm.axes.token[value]

    def rows(self, tokens: Sequence[int], first: int) -> np.ndarray:
        """Logits of positions first..len(tokens)-1, as [rows, vocab]."""
        cap = self.dm.capacity
        if not 1 <= len(tokens) <= cap:
            raise CimcError(f"{len(tokens)} tokens do not fit the capacity {cap}", "decode")
        check_ids(tokens, self.dm.vocab)
        ids = np.full((1, cap), PAD_ID, np.int64)
        ids[0, : len(tokens)] = tokens
        feeds = {self.dm.token_input: ids}
        if self.dm.mask_input is not None:
            feeds[self.dm.mask_input] = np.ones((1, cap), np.int64)
        if self._golden is not None:
            result = self._golden.run(feeds, keep_all=self._scored)
            out = result.outputs[self._out]
            if self._scored:
                self.last_recall = self._recall(result.values, first, len(tokens))
        else:
            assert self._float is not None
            out = self._float.run(feeds)[self._out]
        picked = np.take(out, np.arange(first, len(tokens)), axis=self._axis)
        return np.moveaxis(picked, self._axis, 0).reshape(len(tokens) - first, -1)

    def _recall(
        self, values: dict[str, np.ndarray], first: int, end: int
    ) -> dict[str, tuple[int, int]]:
        """The predictors' (hits, active) counts over the rows first..end-1."""

        def rows(name: str, value: np.ndarray) -> np.ndarray:
            (axis,) = self.dm.axes.token[name]
            return np.take(value, np.arange(first, end), axis=axis)

        return recall_counts(self.dm.qgraph, values, rows)
