"""The straightforward item-centric Swing of Apache Flink ML (`org.apache.flink.ml.recommendation.swing`)
in Python/NumPy: for each item, for each pair of its (sampled) users, intersect their item sets
(Flink: `HashSet.retainAll`), add w_u w_v / (alpha2 + |common|) to every common item in a hash map,
then a top-k. No compiled kernel, no sorted merges: the baseline our numba kernel is measured against.
"""

from __future__ import annotations

import time

import numpy as np

from llm_i2i.i2i.swing import SwingGraph


def swing_item_centric(graph: SwingGraph, k: int, alpha2: float, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Top-k of `items` as dense [len(items), k] (-1 / -inf padded), ties by item index; and seconds."""
    t0 = time.perf_counter()
    idx = np.full((len(items), k), -1, np.int32)
    out = np.full((len(items), k), -np.inf)
    user_sets: dict[int, set] = {}

    def items_of(u: int) -> set:
        s = user_sets.get(u)
        if s is None:
            s = user_sets[u] = set(graph.user_items[graph.user_indptr[u] : graph.user_indptr[u + 1]].tolist())
        return s

    weight = graph.user_weight
    for row, i in enumerate(np.asarray(items).tolist()):
        users = graph.item_users[graph.item_indptr[i] : graph.item_indptr[i + 1]].tolist()
        acc: dict[int, float] = {}
        for a in range(len(users)):
            su = items_of(users[a])
            for b in range(a + 1, len(users)):
                common = su & items_of(users[b])
                w = weight[users[a]] * weight[users[b]] / (alpha2 + len(common))
                for j in common:
                    if j != i:
                        acc[j] = acc.get(j, 0.0) + w
        best = sorted(acc.items(), key=lambda t: (-t[1], t[0]))[:k]
        for r, (j, s) in enumerate(best):
            idx[row, r], out[row, r] = j, s
    return idx, out, time.perf_counter() - t0
