"""The interface every LLM inference back end implements (HF in `inference.py`, vLLM in `vllm_engine.py`).

Its own module so that both back ends import it and `inference.make_engine` imports them, without a circle.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Sequence

import numpy as np

ENGINES = ("hf", "vllm")


@dataclass
class TopItems:
    """Per-history top-N: `item_ids[r]` external ids best first, `scores[r]` their log-probabilities."""

    item_ids: list[np.ndarray]
    scores: list[np.ndarray]


class InferenceEngine(abc.ABC):
    """What a batch actor holds: a loaded checkpoint that scores many histories at once."""

    #: external item ids the checkpoint knows (one token each), sorted
    item_ids: np.ndarray

    def known_items(self, item_ids: np.ndarray) -> np.ndarray:
        """Boolean mask: which external ids have an item token in this checkpoint."""
        ids = np.asarray(item_ids, dtype=np.int64)
        known = self.__dict__.get("_known_set")
        if known is None:  # a set, not searchsorted: this runs once per row, where numpy's per-call cost dominates
            known = self.__dict__["_known_set"] = frozenset(np.asarray(self.item_ids, dtype=np.int64).tolist())
        return np.fromiter((i in known for i in ids.tolist()), dtype=bool, count=len(ids))

    @abc.abstractmethod
    def top_items(self, histories: Sequence[np.ndarray], n: int, exclude_history: bool) -> TopItems:
        """Top-n next items for each history from one decoding step (history items removed if asked)."""

    @abc.abstractmethod
    def yes_probability(self, histories: Sequence[np.ndarray], candidates: np.ndarray) -> np.ndarray:
        """P(Yes) / (P(Yes) + P(No)) for "does `candidates[r]` fit after `histories[r]`", float32."""
