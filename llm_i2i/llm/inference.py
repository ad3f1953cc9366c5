"""LLM inference engines: one interface, two back ends (HF forward pass here, vLLM in `vllm_engine.py`).

Generation needs only ONE decoding step: the next-item distribution over item tokens, from which the
top-N items are read. Discrimination needs one step too: P(Yes) normalised over the Yes/No tokens.
Engines take histories as external item ids (oldest first, already truncated by the caller) so the
batch pipelines (`generate.py`, `discriminate.py`) never see tokens or prompts.

Scores are log-probabilities over the item tokens only (log-softmax of the item-restricted logits), so
both engines produce the same numbers for the same checkpoint, not just the same ranking.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from llm_i2i.llm.engine import ENGINES, InferenceEngine, TopItems
from llm_i2i.progress import log


class HFEngine(InferenceEngine):
    """Plain `transformers` forward passes (CPU or one GPU) through `llm_i2i.llm.scoring`."""

    def __init__(self, checkpoint_dir: str, device: str = "cpu", dtype: str | None = None,
                 torch_threads: int | None = None, forward_batch_size: int = 256,
                 forward_batch_tokens: int | None = None, titles: Mapping[int, str] | None = None):
        import torch

        from llm_i2i.llm.modeling import load_checkpoint
        from llm_i2i.llm.scoring import MAX_BATCH_TOKENS
        from llm_i2i.llm.tokenizer import item_vocabulary

        if torch_threads:
            torch.set_num_threads(int(torch_threads))
        self.model, self.tokenizer, self.manifest = load_checkpoint(checkpoint_dir, dtype=dtype, device=device)
        self.item_ids, _ = item_vocabulary(self.tokenizer)  # score column j <-> item_ids[j]
        # prompts and padded tokens per forward pass (None: the scoring module's default token cap)
        self.forward_batch_size = forward_batch_size
        self.forward_batch_tokens = forward_batch_tokens or MAX_BATCH_TOKENS
        self.titles = titles

    def top_items(self, histories: Sequence[np.ndarray], n: int, exclude_history: bool) -> TopItems:
        import torch

        from llm_i2i.llm.scoring import next_item_scores, topn_items

        if not len(histories):
            return TopItems([], [])
        hs = [np.asarray(h, np.int64).tolist() for h in histories]
        logits = next_item_scores(self.model, self.tokenizer, hs, max_history=None, titles=self.titles,
                                  batch_size=self.forward_batch_size,
                                  max_tokens=self.forward_batch_tokens)
        items, scores = topn_items(torch.log_softmax(logits.float(), dim=-1), n, hs if exclude_history else None,
                                   item_ids=self.item_ids)
        keep = items >= 0  # fewer than n items left after exclusion
        return TopItems([i[k] for i, k in zip(items, keep)], [s[k] for s, k in zip(scores, keep)])

    def yes_probability(self, histories: Sequence[np.ndarray], candidates: np.ndarray) -> np.ndarray:
        from llm_i2i.llm.scoring import yes_probability

        if not len(histories):
            return np.zeros(0, np.float32)
        p = yes_probability(self.model, self.tokenizer, [np.asarray(h, np.int64).tolist() for h in histories],
                            [int(c) for c in candidates], max_history=None, titles=self.titles,
                            batch_size=self.forward_batch_size, max_tokens=self.forward_batch_tokens)
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


def usable_device(requested: str | None, gpu_assigned: bool) -> str:
    """The torch device an HF engine runs on: the requested one, else 'cuda' when the scheduler gave this
    process a GPU; a CUDA device that torch cannot use (a GPU declared but absent) falls back to the CPU, logged."""
    import torch

    device = requested or ("cuda" if gpu_assigned else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        log.warning(f"device {device!r} requested (GPU assigned: {gpu_assigned}) but torch sees no usable CUDA "
                    f"device (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}): running on CPU")
        return "cpu"
    return device


@dataclass
class EngineSpec:
    """How a worker builds its engine: `make_engine(kind, checkpoint_dir, **options)`, on the device it was given."""

    kind: str
    checkpoint_dir: str
    options: dict[str, Any] = field(default_factory=dict)

    def build(self, gpu_assigned: bool = False) -> InferenceEngine:
        options = dict(self.options)
        if self.kind == "hf":
            options["device"] = usable_device(options.get("device"), gpu_assigned)
        return make_engine(self.kind, self.checkpoint_dir, **options)
