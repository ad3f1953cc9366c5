"""References our Swing kernel is measured against, on the same capped graph:

- `swing_item_centric`: the straightforward item-centric Swing of Apache Flink ML
  (`org.apache.flink.ml.recommendation.swing`) in Python: for each item, for each pair of its (sampled)
  users, intersect their item sets (Flink: `HashSet.retainAll`), add w_u w_v / (alpha2 + |common|) to
  every common item in a hash map, then a top-k;
- `swing_mark_scan`: the same loop as a minimal compiled (numba) mark-and-scan kernel, the per-merge-step
  floor of the pair-by-pair formulation.
"""

from __future__ import annotations

import time

import numba
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


@numba.njit(cache=True, nogil=True)
def _mark_scan_items(user_indptr, user_items, item_indptr, item_users, weight, alpha2, k, todo, out_idx, out_sc, counts):
    """The minimal compiled kernel: per item, per user pair, mark one list and scan the other (one
    branch-free lookup per element), add the pair weight to every common item, sort the candidates.
    counts[0] += merge steps (list elements marked or scanned), counts[1] += user pairs."""
    n_items = item_indptr.shape[0] - 1
    mark = np.zeros(n_items, np.int64)
    seen = np.full(n_items, -1, np.int64)
    acc = np.zeros(n_items, np.float64)
    touched = np.empty(n_items, np.int32)
    common = np.empty(n_items, np.int32)
    tag = 0
    steps = 0
    pairs = 0
    for r in range(todo.shape[0]):
        i = todo[r]
        us = item_users[item_indptr[i] : item_indptr[i + 1]]
        n_touched = 0
        for a in range(us.shape[0] - 1):
            iu = user_items[user_indptr[us[a]] : user_indptr[us[a] + 1]]
            tag += 1
            for p in range(iu.shape[0]):
                mark[iu[p]] = tag
            steps += iu.shape[0]
            for b in range(a + 1, us.shape[0]):
                iv = user_items[user_indptr[us[b]] : user_indptr[us[b] + 1]]
                c = 0
                for q in range(iv.shape[0]):
                    common[c] = iv[q]
                    c += mark[iv[q]] == tag
                steps += iv.shape[0]
                pairs += 1
                w = weight[us[a]] * weight[us[b]] / (alpha2 + c)
                for t in range(c):
                    j = common[t]
                    if j != i:
                        if seen[j] != i:
                            seen[j] = i
                            acc[j] = 0.0
                            touched[n_touched] = j
                            n_touched += 1
                        acc[j] += w
        cand = np.sort(touched[:n_touched])
        neg = np.empty(n_touched, np.float64)
        for t in range(n_touched):
            neg[t] = -acc[cand[t]]
        order = np.argsort(neg, kind="mergesort")  # ties by ascending item index
        for t in range(min(k, n_touched)):
            out_idx[r, t] = cand[order[t]]
            out_sc[r, t] = acc[cand[order[t]]]
    counts[0] += steps
    counts[1] += pairs


def swing_mark_scan(graph: SwingGraph, k: int, alpha2: float, n_threads: int = 2) -> dict:
    """All items on `n_threads` threads (interleaved item blocks, like the library). Returns idx/scores
    [n_items, k] (-1 / -inf padded), merge steps, user pairs and seconds."""
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.perf_counter()
    idx = np.full((graph.n_items, k), -1, np.int32)
    sc = np.full((graph.n_items, k), -np.inf)
    counts = np.zeros((n_threads, 2), np.int64)

    def block(t: int) -> None:
        todo = np.arange(t, graph.n_items, n_threads, dtype=np.int64)
        bi, bs = idx[todo], sc[todo]
        _mark_scan_items(graph.user_indptr, graph.user_items, graph.item_indptr, graph.item_users, graph.user_weight,
                         float(alpha2), k, todo, bi, bs, counts[t])
        idx[todo], sc[todo] = bi, bs

    with ThreadPoolExecutor(n_threads) as ex:
        list(ex.map(block, range(n_threads)))
    return {"idx": idx, "scores": sc, "merge_steps": int(counts[:, 0].sum()), "user_pairs": int(counts[:, 1].sum()),
            "seconds": time.perf_counter() - t0}
