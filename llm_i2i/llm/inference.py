"""LLM inference engines: one interface, two back ends (HF forward pass here, vLLM in `vllm_engine.py`).

Generation needs only ONE decoding step: the next-item distribution over item tokens, from which the
top-N items are read. Discrimination needs one step too: P(Yes) normalised over the Yes/No tokens.
Engines take histories as external item ids (oldest first, already truncated by the caller) so the
batch pipelines (`generate.py`, `discriminate.py`) never see tokens or prompts.

Scores are log-probabilities over the item tokens only (log-softmax of the item-restricted logits), so
both engines produce the same numbers for the same checkpoint, not just the same ranking.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

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
        if len(self.item_ids) == 0:
            return np.zeros(len(ids), bool)
        pos = np.clip(np.searchsorted(self.item_ids, ids), 0, len(self.item_ids) - 1)
        return self.item_ids[pos] == ids

    @abc.abstractmethod
    def top_items(self, histories: Sequence[np.ndarray], n: int, exclude_history: bool) -> TopItems:
        """Top-n next items for each history from one decoding step (history items removed if asked)."""

    @abc.abstractmethod
    def yes_probability(self, histories: Sequence[np.ndarray], candidates: np.ndarray) -> np.ndarray:
        """P(Yes) / (P(Yes) + P(No)) for "does `candidates[r]` fit after `histories[r]`", float32."""


class HFEngine(InferenceEngine):
    """Plain `transformers` forward passes (CPU or one GPU) through `llm_i2i.llm.scoring`."""

    def __init__(self, checkpoint_dir: str, device: str = "cpu", dtype: str | None = None,
                 torch_threads: int | None = None, forward_batch_size: int = 256,
                 titles: Mapping[int, str] | None = None):
        import torch

        from llm_i2i.llm.modeling import load_checkpoint
        from llm_i2i.llm.tokenizer import item_vocabulary

        if torch_threads:
            torch.set_num_threads(int(torch_threads))
        self.model, self.tokenizer, self.manifest = load_checkpoint(checkpoint_dir, dtype=dtype, device=device)
        self.item_ids, _ = item_vocabulary(self.tokenizer)  # score column j <-> item_ids[j]
        self.forward_batch_size = forward_batch_size
        self.titles = titles

    def top_items(self, histories: Sequence[np.ndarray], n: int, exclude_history: bool) -> TopItems:
        import torch

        from llm_i2i.llm.scoring import next_item_scores, topn_items

        if not len(histories):
            return TopItems([], [])
        hs = [np.asarray(h, np.int64).tolist() for h in histories]
        logits = next_item_scores(self.model, self.tokenizer, hs, max_history=None, batch_size=self.forward_batch_size,
                                  titles=self.titles)
        items, scores = topn_items(torch.log_softmax(logits.float(), dim=-1), n, hs if exclude_history else None,
                                   item_ids=self.item_ids)
        keep = items >= 0  # fewer than n items left after exclusion
        return TopItems([i[k] for i, k in zip(items, keep)], [s[k] for s, k in zip(scores, keep)])

    def yes_probability(self, histories: Sequence[np.ndarray], candidates: np.ndarray) -> np.ndarray:
        from llm_i2i.llm.scoring import yes_probability

        if not len(histories):
            return np.zeros(0, np.float32)
        p = yes_probability(self.model, self.tokenizer, [np.asarray(h, np.int64).tolist() for h in histories],
                            [int(c) for c in candidates], max_history=None, batch_size=self.forward_batch_size,
                            titles=self.titles)
        return np.asarray(p, dtype=np.float32)


def checkpoint_titles(checkpoint_dir: str | Path, items) -> dict[int, str] | None:
    """Item titles for the prompts if the checkpoint was fine-tuned with titles (its manifest says so)."""
    import json

    from llm_i2i.llm.modeling import MANIFEST
    from llm_i2i.llm.prompts import titles_from_items

    path = Path(checkpoint_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{checkpoint_dir}: not an llm-i2i checkpoint (no {MANIFEST})")
    manifest = json.loads(path.read_text())
    return titles_from_items(items) if manifest.get("sft_config", {}).get("titles") else None


def make_engine(kind: str, checkpoint_dir: str, **options) -> InferenceEngine:
    """Build an engine by name ('hf' or 'vllm'); `options` go to its constructor."""
    if kind == "hf":
        return HFEngine(checkpoint_dir, **options)
    if kind == "vllm":
        from llm_i2i.llm.vllm_engine import VLLMEngine

        return VLLMEngine(checkpoint_dir, **options)
    raise ValueError(f"unknown engine {kind!r}; choose one of {ENGINES}")
