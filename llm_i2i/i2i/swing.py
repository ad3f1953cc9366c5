"""Swing (Yang et al., Alibaba 2020) as in Apache Flink ML's `Swing`:

    sim(i, j) = sum over unordered user pairs {u, v} who both clicked i and j of
                w_u * w_v / (alpha2 + |I_u & I_v|),        w_u = (|I_u| + alpha1) ** -beta

Positive `beta` down-weights heavy users (Alink's default userBeta=-0.35 would *up*-weight them; a
negative beta is refused unless `allow_negative_beta`). Caps bound the work of heavy users and hot
items: users with fewer than `min_items_per_user` distinct items are ignored; users above
`max_items_per_user` are dropped (Flink) or cut to their most recent items; an item with more than
`max_users_per_item` users keeps a seeded reservoir sample of them (seed mixed with the item id, so
the sample does not depend on sharding).

The kernel is item-centric: for each item i, the pair weights of its users and, for every item j those
users share, the sum of the weights of the pairs that share it; top-K with ties broken by item index.
A user pair's common-item count comes from one pass over the users' lists into an n x n pair matrix
(n = i's users, at most `MAX_PAIR_USERS`), not from one list scan per pair: on skewed graphs heavy users
meet in every hot item and share a handful of hot items out of hundreds, so scanning their lists pair by
pair is ~10x the work (`benchmarks/swing_scale.py --preset skewed`). Items with more users fall back to
mark-and-scan. The same kernel serves the single-node model and each shard of the sharded job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numba
import numpy as np

from llm_i2i.data.sequences import Sequences
from llm_i2i.i2i.base import I2IModel, Neighbors


@dataclass
class SwingConfig:
    k: int = 200
    alpha1: float = 15.0
    alpha2: float = 0.0
    beta: float = 0.3
    min_items_per_user: int = 2
    max_items_per_user: int = 1000
    over_max_items: str = "drop"  # "drop" (Flink) | "keep_recent"
    max_users_per_item: int = 1000
    seed: int = 0
    allow_negative_beta: bool = False
    # estimated kernel steps (`item_work`, an upper bound, ~10x the real steps on skewed graphs) from which
    # the fit runs on a cluster runner when one is given (`llm-i2i index` gives one when RAY_ADDRESS names a
    # cluster); 1e11 is about 3M skewed edges at the default caps. Below it, or without a runner: local threads
    sharded_min_work: float = 1e11

    def validate(self) -> None:
        if self.k <= 0:
            raise ValueError(f"swing.k must be positive, got {self.k}")
        if self.over_max_items not in ("drop", "keep_recent"):
            raise ValueError(f"swing.over_max_items must be 'drop' or 'keep_recent', got {self.over_max_items!r}")
        if self.beta < 0 and not self.allow_negative_beta:
            raise ValueError(
                f"swing.beta={self.beta} < 0 up-weights heavy users (Alink's userBeta sign); "
                "set allow_negative_beta=true if that is really meant"
            )
        if self.alpha2 < 0:
            raise ValueError(f"swing.alpha2 must be >= 0, got {self.alpha2}")
        if self.min_items_per_user < 1 or self.max_items_per_user < self.min_items_per_user:
            raise ValueError("swing: need 1 <= min_items_per_user <= max_items_per_user")
        if self.max_users_per_item < 2:
            raise ValueError("swing.max_users_per_item must be >= 2")
        if self.sharded_min_work < 0:
            raise ValueError(f"swing.sharded_min_work must be >= 0, got {self.sharded_min_work}")


@dataclass
class SwingGraph:
    """Both adjacency directions as sorted int32 CSR arrays, plus the user weights."""

    user_indptr: np.ndarray  # int64 [n_users + 1]
    user_items: np.ndarray  # int32, sorted within each user
    item_indptr: np.ndarray  # int64 [n_items + 1]
    item_users: np.ndarray  # int32, sorted within each item
    user_weight: np.ndarray  # float64 [n_users]
    n_items: int
    report: dict

    @property
    def n_edges(self) -> int:
        return int(self.user_indptr[-1])


def build_graph(train: Sequences, cfg: SwingConfig) -> SwingGraph:
    """Distinct (user, item) pairs with the user and item caps applied."""
    n_items = train.n_items
    lens = train.lengths
    user_of = np.repeat(np.arange(train.n_users, dtype=np.int64), lens)
    keys = np.unique(user_of * n_items + train.items.astype(np.int64))
    users, items = keys // n_items, (keys % n_items).astype(np.int32)
    distinct = np.bincount(users, minlength=train.n_users)
    too_many = distinct > cfg.max_items_per_user
    keep_user = (distinct >= cfg.min_items_per_user) & ~too_many
    report = {
        "users_below_min_items": int(np.sum((distinct < cfg.min_items_per_user) & (distinct > 0))),
        "users_above_max_items": int(np.sum(too_many)),
        "over_max_items": cfg.over_max_items,
    }
    sel = keep_user[users]
    users, items = users[sel], items[sel]
    if cfg.over_max_items == "keep_recent" and too_many.any():
        extra_u, extra_i = [], []
        for u in np.flatnonzero(too_many):
            seq = train.user(u)[::-1]
            _, first = np.unique(seq, return_index=True)
            recent = np.sort(seq[np.sort(first)][: cfg.max_items_per_user])
            extra_u.append(np.full(len(recent), u, np.int64))
            extra_i.append(recent.astype(np.int32))
        users = np.concatenate([users, *extra_u])
        items = np.concatenate([items, *extra_i])
        order = np.lexsort((items, users))
        users, items = users[order], items[order]
    user_indptr = np.zeros(train.n_users + 1, np.int64)
    np.cumsum(np.bincount(users, minlength=train.n_users), out=user_indptr[1:])
    # item -> users, users ascending within each item
    order = np.lexsort((users, items))
    iu_items, iu_users = items[order], users[order].astype(np.int32)
    item_indptr = np.zeros(n_items + 1, np.int64)
    np.cumsum(np.bincount(iu_items, minlength=n_items), out=item_indptr[1:])
    item_indptr, iu_users, sampled = _cap_item_users(item_indptr, iu_users, cfg.max_users_per_item, cfg.seed)
    report["items_sampled_to_max_users"] = sampled
    deg = np.diff(user_indptr).astype(np.float64)
    weight = np.where(deg > 0, (deg + cfg.alpha1) ** (-cfg.beta), 0.0)
    return SwingGraph(user_indptr, items.astype(np.int32), item_indptr, iu_users, weight, n_items, report)


def reservoir_sample(values: np.ndarray, size: int, seed: int, key: int) -> np.ndarray:
    """Algorithm R over `values` in order, seeded by (seed, key); returns the kept values sorted."""
    rng = np.random.default_rng([seed, key])
    res = values[:size].copy()
    if len(values) > size:
        draws = (rng.random(len(values) - size) * np.arange(size + 1, len(values) + 1)).astype(np.int64)
        # the sequential replacements, vectorised: each slot keeps the value of its last draw
        hits = np.flatnonzero(draws < size)
        slots_rev = draws[hits][::-1]
        slot, first_rev = np.unique(slots_rev, return_index=True)
        res[slot] = values[size + hits[::-1][first_rev]]
    return np.sort(res)


def _cap_item_users(indptr, users, cap, seed):
    counts = np.diff(indptr)
    hot = np.flatnonzero(counts > cap)
    if len(hot) == 0:
        return indptr, users, 0
    new_counts = np.minimum(counts, cap)
    new_indptr = np.zeros_like(indptr)
    np.cumsum(new_counts, out=new_indptr[1:])
    # keep the first `cap` slots of every item, then overwrite the hot items' slots with their samples
    keep = np.arange(len(users)) - np.repeat(indptr[:-1], counts) < np.repeat(new_counts, counts)
    out = users[keep].astype(np.int32)
    for i in hot:
        out[new_indptr[i] : new_indptr[i + 1]] = reservoir_sample(users[indptr[i] : indptr[i + 1]], cap, seed, int(i))
    return new_indptr, out, int(len(hot))


class SwingScratch:
    """Per-thread work arrays of the kernel, sized for one graph, allocated once and reused by every chunk
    (a shard then costs no allocation per chunk, however many chunks it streams): O(n_items) item arrays,
    and O(sum of the list lengths of one item's users) member and task lists."""

    def __init__(self, graph: SwingGraph):
        n_items = graph.n_items
        reads = int(user_list_sums(graph).max(initial=0))
        self.score = np.zeros(n_items, np.float64)
        self.touched = np.empty(n_items + 1, np.int32)  # one spare slot for the branch-free append
        self.count = np.zeros(n_items, np.int32)  # all zero between items
        self.start = np.zeros(n_items, np.int64)
        self.end = np.zeros(n_items, np.int64)
        self.members = np.empty(reads, np.int32)
        self.task_item = np.empty(reads, np.int32)
        self.task_from = np.empty(reads, np.int64)
        self.task_to = np.empty(reads, np.int64)
        self.task_indptr = np.empty(int(np.diff(graph.item_indptr).max(initial=0)) + 1, np.int64)
        self.row = np.empty(int(np.diff(graph.item_indptr).max(initial=0)), np.float64)


def user_list_sums(graph: SwingGraph) -> np.ndarray:
    """Per item, the summed item-list lengths of its (sampled) users: the list elements its scoring reads."""
    user_len = np.diff(graph.user_indptr).astype(np.int64)
    cum = np.concatenate([[0], np.cumsum(user_len[graph.item_users])])
    return cum[graph.item_indptr[1:]] - cum[graph.item_indptr[:-1]]


def item_work(graph: SwingGraph) -> np.ndarray:
    """Work per item, an upper bound of the kernel's steps: (n_i + 1) * the summed list lengths of its n_i users
    (2 reads per list element, 2 updates per (pair, common item); the pairs of a user share at most
    (n_i - 1) times its list), + 1 for the item."""
    n_i = np.diff(graph.item_indptr)
    return np.where(n_i > 1, (n_i + 1) * user_list_sums(graph).astype(np.float64), 0.0) + 1.0


@numba.njit(cache=True, nogil=True)
def _item_scores(i, us, user_indptr, user_items, weight, alpha2, score, touched, count, start, end, members,
                 task_item, task_from, task_to, task_indptr, row):
    """Scores of item i's candidates into score[touched[:n]]; returns (n, steps).

    1. For every item x that i's users' lists reach, `members[start[x]:end[x]]` lists which of the users
       (local index a, ascending) clicked it; user a gets a task (x, the members after a) per shared x.
    2. User by user, a's tasks count its common items with every later user b into `row[b]`, turn them
       into pair weights w_a w_b / (alpha2 + c_ab), and add each weight to the score of every x the pair
       shares. A pair's intersection thus costs its common items, not a scan of a whole list (heavy users
       meet in every hot item and share a handful of items out of hundreds), and the row stays in L1.
    Each score sums its pairs in (a, b) order, the order of a pair-by-pair kernel: bit-identical to one."""
    n = us.shape[0]
    n_touched = 0
    reads = 0
    for a in range(n):  # count[] is all zero between items: branch-free first touch
        u = us[a]
        for p in range(user_indptr[u], user_indptr[u + 1]):
            x = user_items[p]
            touched[n_touched] = x
            n_touched += count[x] == 0
            count[x] += 1
        reads += user_indptr[u + 1] - user_indptr[u]
    pos = 0
    for t in range(n_touched):
        x = touched[t]
        start[x] = pos
        pos += count[x]
        end[x] = pos
        count[x] = 0  # now the fill cursor
        score[x] = 0.0
    n_tasks = 0
    for a in range(n):
        task_indptr[a] = n_tasks
        u = us[a]
        for p in range(user_indptr[u], user_indptr[u + 1]):
            x = user_items[p]
            s = start[x] + count[x]
            members[s] = a
            count[x] += 1
            if s + 1 < end[x]:  # later users share x with a
                task_item[n_tasks] = x
                task_from[n_tasks] = s + 1
                task_to[n_tasks] = end[x]
                n_tasks += 1
    task_indptr[n] = n_tasks
    steps = 2 * reads
    for a in range(n - 1):
        for b in range(a + 1, n):
            row[b] = 0.0
        for t in range(task_indptr[a], task_indptr[a + 1]):
            for q in range(task_from[t], task_to[t]):
                row[members[q]] += 1.0
            steps += task_to[t] - task_from[t]
        wa = weight[us[a]]
        for b in range(a + 1, n):
            row[b] = wa * weight[us[b]] / (alpha2 + row[b])
        for t in range(task_indptr[a], task_indptr[a + 1]):
            x = task_item[t]
            if x == i:
                continue
            acc = score[x]
            for q in range(task_from[t], task_to[t]):
                acc += row[members[q]]
            score[x] = acc
            steps += task_to[t] - task_from[t]
    n_cand = 0
    for t in range(n_touched):
        x = touched[t]
        if count[x] >= 2 and x != i:
            touched[n_cand] = x
            n_cand += 1
        count[x] = 0
    return n_cand, steps


@numba.njit(cache=True, nogil=True)
def _top_k_row(cand, score, k, out_idx, out_sc, row):
    """The k best of `cand` by score into out_*[row], ties by ascending item index."""
    n = cand.shape[0]
    if n > k:  # bounded top-k: everything above the k-th largest score and every tie at it
        vals = np.empty(n, np.float64)
        for t in range(n):
            vals[t] = score[cand[t]]
        thr = np.partition(vals, n - k)[n - k]
        sel = np.empty(n, np.int32)
        n_sel = 0
        for t in range(n):
            if score[cand[t]] >= thr:
                sel[n_sel] = cand[t]
                n_sel += 1
        cand = sel[:n_sel]
    cand = np.sort(cand)
    vals = np.empty(cand.shape[0], np.float64)
    for t in range(cand.shape[0]):
        vals[t] = -score[cand[t]]
    order = np.argsort(vals, kind="mergesort")  # stable: ties keep ascending item index
    for t in range(min(k, cand.shape[0])):
        out_idx[row, t] = cand[order[t]]
        out_sc[row, t] = score[cand[order[t]]]


@numba.njit(cache=True, nogil=True)
def _swing_items(user_indptr, user_items, item_indptr, item_users, weight, alpha2, k, todo, out_idx, out_sc, work,
                 score, touched, count, start, end, members, task_item, task_from, task_to, task_indptr, row):
    """Score every item in `todo` into rows of out_idx/out_sc (pre-filled with -1/-inf); add the steps
    (list elements read, and (pair, common item) updates) to work[0]."""
    steps = 0
    for r in range(todo.shape[0]):
        i = todo[r]
        us = item_users[item_indptr[i] : item_indptr[i + 1]]
        if us.shape[0] < 2:
            continue
        n_cand, st = _item_scores(i, us, user_indptr, user_items, weight, alpha2, score, touched, count, start, end,
                                  members, task_item, task_from, task_to, task_indptr, row)
        steps += st
        if n_cand > 0:
            _top_k_row(touched[:n_cand], score, k, out_idx, out_sc, r)
    work[0] += steps


def swing_topk(graph: SwingGraph, k: int, alpha2: float, items: np.ndarray | None = None,
               scratch: SwingScratch | None = None):
    """Top-k Swing neighbours of `items` (default: all). Returns (idx [n, k] int32 -1-padded,
    scores [n, k] float64 -inf-padded, steps). Pass a `scratch` to reuse work arrays across calls."""
    todo = np.arange(graph.n_items, dtype=np.int64) if items is None else np.asarray(items, np.int64)
    s = scratch or SwingScratch(graph)
    out_idx = np.full((len(todo), k), -1, np.int32)
    out_sc = np.full((len(todo), k), -np.inf, np.float64)
    work = np.zeros(1, np.int64)
    _swing_items(
        graph.user_indptr, graph.user_items, graph.item_indptr, graph.item_users, graph.user_weight, float(alpha2),
        k, todo, out_idx, out_sc, work, s.score, s.touched, s.count, s.start, s.end, s.members, s.task_item,
        s.task_from, s.task_to, s.task_indptr, s.row,
    )
    return out_idx, out_sc, int(work[0])


def swing_topk_threaded(graph: SwingGraph, k: int, alpha2: float, n_threads: int) -> tuple[np.ndarray, np.ndarray, int]:
    """All items, split into interleaved blocks across threads (the kernel releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    if n_threads <= 1:
        return swing_topk(graph, k, alpha2)
    blocks = [np.arange(t, graph.n_items, n_threads, dtype=np.int64) for t in range(n_threads)]
    with ThreadPoolExecutor(n_threads) as ex:
        parts = list(ex.map(lambda b: swing_topk(graph, k, alpha2, b), blocks))
    idx = np.full((graph.n_items, k), -1, np.int32)
    sc = np.full((graph.n_items, k), -np.inf)
    for b, (bi, bs, _) in zip(blocks, parts):
        idx[b], sc[b] = bi, bs
    return idx, sc, sum(p[2] for p in parts)


# (capped graph, external item ids, k, alpha2) -> (neighbours, stats with "shards" and "intersection_steps")
ShardedRunner = Callable[[SwingGraph, np.ndarray, int, float], "tuple[Neighbors, dict]"]


class Swing(I2IModel):
    name = "swing"

    def __init__(self, config: SwingConfig | None = None, n_threads: int | None = None,
                 runner: ShardedRunner | None = None):
        self.config = config or SwingConfig()
        self.config.validate()
        self.n_threads = n_threads or numba.config.NUMBA_NUM_THREADS
        self.runner = runner  # the sharded path (ray_jobs.swing_sharded.RaySwingRunner), used past a size
        self.report: dict = {}

    def fit(self, train: Sequences, valid_targets: np.ndarray | None = None,
            n_real: np.ndarray | None = None) -> Neighbors:
        from llm_i2i.i2i.base import neighbors_from_dense_topk

        g = build_graph(train, self.config)
        work = float(item_work(g).sum())
        self.report = {**g.report, "edges": g.n_edges, "estimated_work": work}
        if self.runner is not None and work >= self.config.sharded_min_work:
            neighbors, stats = self.runner(g, train.item_ids, self.config.k, self.config.alpha2)
            self.report.update(path="sharded", shards=stats["shards"], intersection_steps=stats["intersection_steps"])
            return neighbors
        idx, sc, steps = swing_topk_threaded(g, self.config.k, self.config.alpha2, self.n_threads)
        self.report.update(path="threads", threads=self.n_threads, intersection_steps=steps)
        return neighbors_from_dense_topk(idx, sc, train.item_ids)
