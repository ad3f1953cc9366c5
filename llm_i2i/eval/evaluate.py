"""Score rankings against the leave-one-out targets: overall and split by long-tail target."""

from __future__ import annotations

from typing import Any

import numpy as np

from llm_i2i.config import to_dict
from llm_i2i.data.longtail import long_tail_mask
from llm_i2i.data.split import LeaveOneOut
from llm_i2i.kernels.merge import recommend_batch
from llm_i2i.eval.metrics import hit_ranks, rank_metrics
from llm_i2i.eval.protocol import EvalConfig
from llm_i2i.i2i.base import Neighbors


def evaluate_topk(topk: np.ndarray, split: LeaveOneOut, cfg: EvalConfig) -> dict[str, Any]:
    """`topk[u]`: ranked dense item indices for user u (-1 padded), at least max(ks) wide."""
    targets = split.targets(cfg.split)
    evaluated = targets >= 0
    ranks = hit_ranks(topk, targets)[evaluated]
    tail = long_tail_mask(split.train.item_counts(), cfg.long_tail_fraction)
    tail_target = tail[targets[evaluated]]
    out: dict[str, Any] = rank_metrics(ranks, cfg.ks)
    out["long_tail"] = {**rank_metrics(ranks[tail_target], cfg.ks), "users": int(tail_target.sum())}
    out["non_long_tail"] = {**rank_metrics(ranks[~tail_target], cfg.ks), "users": int((~tail_target).sum())}
    out["users_evaluated"] = int(evaluated.sum())
    out["protocol"] = {**to_dict(cfg), "long_tail_items": int(tail.sum())}
    return out


def recommend_for_split(neighbors: Neighbors, split: LeaveOneOut, cfg: EvalConfig) -> np.ndarray:
    hist = split.history(cfg.split)
    idx, _ = recommend_batch(
        neighbors, hist.indptr, hist.items, num_triggers=cfg.num_triggers, k=cfg.max_k,
        how=cfg.merge, decay=cfg.recency_decay, mask_history=cfg.mask_history,
    )
    return idx


def evaluate_neighbors(neighbors: Neighbors, split: LeaveOneOut, cfg: EvalConfig) -> dict[str, Any]:
    return evaluate_topk(recommend_for_split(neighbors, split, cfg), split, cfg)


def format_table(metrics: dict[str, Any], ks: tuple[int, ...] | None = None) -> str:
    """A small Markdown table: rows all / long-tail / non-long-tail, columns R@k and N@k."""
    ks = ks or tuple(int(k.split("@")[1]) for k in metrics if k.startswith("recall@"))
    head = "| subset | users | " + " | ".join(f"R@{k}" for k in ks) + " | " + " | ".join(f"N@{k}" for k in ks) + " |"
    sep = "|" + "---|" * (2 + 2 * len(ks))
    rows = [head, sep]
    for name, m in (("all", metrics), ("long-tail", metrics["long_tail"]), ("non-long-tail", metrics["non_long_tail"])):
        users = m.get("users", metrics.get("users_evaluated"))
        vals = [f"{m[f'recall@{k}']:.4f}" for k in ks] + [f"{m[f'ndcg@{k}']:.4f}" for k in ks]
        rows.append(f"| {name} | {users} | " + " | ".join(vals) + " |")
    return "\n".join(rows)
