"""Planning for sharded Swing: per-item work estimates, work-balanced item ranges and bounded chunks.
Pure NumPy; the Ray job (`ray_jobs/swing_sharded.py`) only executes these plans. The two-level plan for
graphs beyond one node and the cost model live beside their benchmark (`benchmarks/swing_plan.py`).

Swing is item-centric and every item's top-K depends only on (its sampled users, those users' full
item lists, the user weights), so any partition of the items gives exactly the single-node answer.
Ranges are balanced by `llm_i2i.i2i.swing.item_work`, an upper bound of each item's kernel steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llm_i2i.i2i.swing import SwingGraph, item_work


def balanced_ranges(work: np.ndarray, n_parts: int) -> np.ndarray:
    """Cut items 0..n-1 into `n_parts` contiguous ranges of about equal total work.
    Returns bounds [n_parts + 1]; range p is items bounds[p]:bounds[p+1] (may be empty)."""
    if n_parts < 1:
        raise ValueError(f"n_parts must be >= 1, got {n_parts}")
    cum = np.concatenate([[0.0], np.cumsum(work, dtype=np.float64)])
    targets = cum[-1] * np.arange(1, n_parts) / n_parts
    cuts = np.searchsorted(cum, targets, side="left")
    return np.concatenate([[0], cuts, [len(work)]]).astype(np.int64)


def chunk_ranges(work: np.ndarray, lo: int, hi: int, max_items: int, max_work: float) -> np.ndarray:
    """Split items lo:hi into chunks of <= max_items items and about <= max_work work each (an item
    heavier than max_work gets a chunk of its own). Bounds the per-chunk output and memory."""
    if max_items < 1:
        raise ValueError("max_items must be >= 1")
    bounds = [lo]
    cum = np.cumsum(work[lo:hi], dtype=np.float64)
    start, base = lo, 0.0
    while start < hi:
        end = int(np.searchsorted(cum, base + max_work, side="right")) + lo
        end = min(max(end, start + 1), start + max_items, hi)
        bounds.append(end)
        base = cum[end - lo - 1]
        start = end
    return np.asarray(bounds, np.int64)


@dataclass
class ShardPlan:
    """Work-balanced contiguous item ranges, one per shard."""

    bounds: np.ndarray  # int64 [n_shards + 1]
    work: np.ndarray  # float64 [n_shards] estimated intersection steps

    @property
    def n_shards(self) -> int:
        return len(self.work)

    @property
    def imbalance(self) -> float:
        """Heaviest shard over the mean (1.0 = perfect)."""
        mean = self.work.mean() if len(self.work) else 0.0
        return float(self.work.max() / mean) if mean > 0 else 1.0


def plan_shards(graph: SwingGraph, n_shards: int, work: np.ndarray | None = None) -> ShardPlan:
    work = item_work(graph) if work is None else work
    bounds = balanced_ranges(work, n_shards)
    cum = np.concatenate([[0.0], np.cumsum(work, dtype=np.float64)])
    return ShardPlan(bounds, cum[bounds[1:]] - cum[bounds[:-1]])
