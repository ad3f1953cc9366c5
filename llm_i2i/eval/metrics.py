"""Recall@K and NDCG@K for one held-out positive per user, from ranked top-K lists."""

from __future__ import annotations

import numpy as np


def hit_ranks(topk: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each user's target in its list, or -1 if absent (or target < 0)."""
    hits = (topk == targets[:, None]) & (targets[:, None] >= 0)
    found = hits.any(1)
    return np.where(found, hits.argmax(1), -1)


def rank_metrics(ranks: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    """Mean Recall@k (= hit@k with one positive) and NDCG@k over the given users' ranks."""
    out: dict[str, float] = {}
    n = len(ranks)
    for k in ks:
        hit = (ranks >= 0) & (ranks < k)
        out[f"recall@{k}"] = float(hit.sum() / n) if n else 0.0
    for k in ks:
        hit = (ranks >= 0) & (ranks < k)
        gains = np.where(hit, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)
        out[f"ndcg@{k}"] = float(gains.sum() / n) if n else 0.0
    return out
