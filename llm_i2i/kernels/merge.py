"""Fan-out merge: a user's M most recent distinct items each fetch their top-K neighbours from the
index; scores are merged per candidate and ranked. ONE implementation, used by offline evaluation
(`recommend_batch`) and by the online service (`FanoutMerger`).

Merge modes: "sum" (candidate score = sum of its scores over triggers), "max", and "recency"
(sum weighted by decay**age, age 0 = the most recent trigger). Ties: item index ascending.
"""

from __future__ import annotations

import threading

import numba
import numpy as np

from llm_i2i.i2i.base import Neighbors

MERGE_MODES = ("sum", "max", "recency")


@numba.njit(inline="always")
def _ranks_before(s1, i1, s2, i2):
    """(score s1, item i1) ranks before (s2, i2): higher score first, then lower item index."""
    return s1 > s2 or (s1 == s2 and i1 < i2)


@numba.njit(cache=True, nogil=True)
def _sift_down(hs, hi, n, pos):
    """Restore the heap below `pos`; the root of hs/hi[:n] is the candidate that ranks last."""
    s, i = hs[pos], hi[pos]
    while True:
        c = 2 * pos + 1
        if c >= n:
            break
        if c + 1 < n and _ranks_before(hs[c], hi[c], hs[c + 1], hi[c + 1]):
            c += 1
        if not _ranks_before(s, i, hs[c], hi[c]):
            break
        hs[pos], hi[pos] = hs[c], hi[c]
        pos = c
    hs[pos], hi[pos] = s, i


SELECT_BINS = 1024  # `_top_k`'s histogram: 4 KB, and a threshold bucket holding a few candidates at K=200
BUCKET_MAX = 16  # `_top_k` bucket-sorts its selection when no bucket holds more (insertion sort within a bucket)
BINS_MIN_K = 48  # measured on ~2,100 candidates: the histogram costs 1-4% at k=32, saves 9% at k=50, 25-33% at k=200


@numba.njit(inline="always")
def _order_key(u):
    """float64 bits -> uint64 that orders as the float does (-0.0 mapped onto +0.0, so equal scores get equal keys)."""
    key = u ^ ((np.uint64(0) - (u >> np.uint64(63))) | np.uint64(0x8000000000000000))
    return key + np.uint64(key == np.uint64(0x7FFFFFFFFFFFFFFF))


@numba.njit(cache=True, nogil=True)
def _bucket_top_k(cand_sc, cand_idx, n, starts, b, key_lo, shift, out_idx, out_sc):
    """`_top_k` once the histogram is known: `starts` holds its counts; buckets b and up hold the selection. A counting
    sort places the selection bucket by bucket, best bucket first, so every candidate already ranks after all of the
    buckets before its own; one insertion sort then only moves candidates within their (small) bucket."""
    pos = 0
    for c in range(starts.shape[0] - 1, b - 1, -1):  # counts -> start offsets, best bucket first
        cnt = starts[c]
        starts[c] = pos
        pos += cnt
    sel_sc, sel_idx = np.empty(pos), np.empty(pos, np.int32)
    threshold = key_lo + (np.uint64(b) << shift)
    keys = cand_sc[:n].view(np.uint64)
    for t in range(n):
        key = _order_key(keys[t])
        if key < threshold:
            continue
        c = (key - key_lo) >> shift
        p = starts[c]
        starts[c] = p + 1
        sel_sc[p], sel_idx[p] = cand_sc[t], cand_idx[t]
    for a in range(1, pos):
        s, j = sel_sc[a], sel_idx[a]
        c = a
        while c > 0 and _ranks_before(s, j, sel_sc[c - 1], sel_idx[c - 1]):
            sel_sc[c], sel_idx[c] = sel_sc[c - 1], sel_idx[c - 1]
            c -= 1
        sel_sc[c], sel_idx[c] = s, j
    m = min(pos, out_idx.shape[0])
    out_sc[:m], out_idx[:m] = sel_sc[:m], sel_idx[:m]
    return m


@numba.njit(cache=True, nogil=True)
def _top_k(cand_sc, cand_idx, n, bins, out_idx, out_sc):
    """The best len(out_idx) of the n candidates (cand_sc[:n], cand_idx[:n]), best first, into out_idx/out_sc; returns
    the count written. A heap over all candidates spent most of a serving merge in unpredictable sift-downs (~2,000
    candidates for k=200), so a histogram of order-preserving score keys (log-like buckets: exponent and top mantissa
    bits) first finds the lowest bucket that still holds the k-th best: only candidates from there up (k plus a few)
    are ranked. Exact: that set contains every candidate scoring at least the k-th best's score. When no selected
    bucket holds more than BUCKET_MAX candidates, they are bucket-sorted (`_bucket_top_k`: a heapsort of the k cost
    more than the rest of the selection); otherwise (many ties, a few outliers stretching the bins) they go through a
    heap. Below BINS_MIN_K the heap's few replacements cost less than the histogram's passes. The heap lives in
    out_idx/out_sc and is sorted in place (heapsort)."""
    k = out_idx.shape[0]
    if k == 0:
        return 0
    keys = cand_sc[:n].view(np.uint64)
    threshold = np.uint64(0)
    if n > k >= BINS_MIN_K:
        key_lo, key_hi = np.uint64(0xFFFFFFFFFFFFFFFF), np.uint64(0)
        for t in range(n):
            key = _order_key(keys[t])
            key_lo, key_hi = min(key_lo, key), max(key_hi, key)
        shift = np.uint64(0)
        while ((key_hi - key_lo) >> shift) >= np.uint64(bins.shape[0]):
            shift += np.uint64(1)
        bins[:] = 0
        for t in range(n):
            bins[(_order_key(keys[t]) - key_lo) >> shift] += 1
        b, above, biggest = bins.shape[0] - 1, 0, 0
        while above + bins[b] < k:
            above += bins[b]
            biggest = max(biggest, bins[b])
            b -= 1
        if max(biggest, bins[b]) <= BUCKET_MAX:
            return _bucket_top_k(cand_sc, cand_idx, n, bins, b, key_lo, shift, out_idx, out_sc)
        threshold = key_lo + (np.uint64(b) << shift)
    hs, hi = out_sc, out_idx
    m = 0
    for t in range(n):
        if _order_key(keys[t]) < threshold:
            continue
        s, j = cand_sc[t], cand_idx[t]
        if m < k:  # sift up
            pos = m
            m += 1
            while pos > 0:
                up = (pos - 1) // 2
                if not _ranks_before(hs[up], hi[up], s, j):
                    break
                hs[pos], hi[pos] = hs[up], hi[up]
                pos = up
            hs[pos], hi[pos] = s, j
        elif _ranks_before(s, j, hs[0], hi[0]):
            hs[0], hi[0] = s, j
            _sift_down(hs, hi, k, 0)
    count = m
    while m > 0:  # swap the last-ranked into the tail; what stays in front is the heap
        m -= 1
        s, j = hs[0], hi[0]
        hs[0], hi[0] = hs[m], hi[m]
        hs[m], hi[m] = s, j
        _sift_down(hs, hi, m, 0)
    return count


ACC_LINE_ITEMS = 8  # `acc` entries (float64) per 64-byte cache line


@numba.njit(cache=True, nogil=True)
def _stream_in(indptr, nbrs, scores, triggers, acc, bounds):
    """Resolve every trigger's row into `bounds` and read each cache line the accumulation will touch, in loops of
    independent loads. A serving replica finds these lines evicted between requests, and inside the accumulation loop
    each miss waits behind the last one (the next row's bounds are only known once a row is done); here they overlap,
    and the accumulator is streamed in sequentially (hardware-prefetched) when it has no more lines than the request
    has neighbour visits, instead of being fetched line by line at random. Returns a checksum of what it read, which
    the caller must use, or the compiler drops the loads."""
    visits = 0
    for t in range(triggers.shape[0]):
        i = triggers[t]
        bounds[t, 0], bounds[t, 1] = indptr[i], indptr[i + 1]
        visits += indptr[i + 1] - indptr[i]
    sink = 0.0
    for t in range(triggers.shape[0]):
        lo, hi = bounds[t, 0], bounds[t, 1]
        for p in range(lo, hi, 16):  # 16 int32 ids / float32 scores to a line
            sink += scores[p] + nbrs[p]
        if hi > lo:
            sink += scores[hi - 1] + nbrs[hi - 1]
    if acc.shape[0] <= ACC_LINE_ITEMS * visits:
        for j in range(0, acc.shape[0], ACC_LINE_ITEMS):
            sink += acc[j]
    return sink


@numba.njit(inline="always")
def _mark(marks, j):
    """Set item j's bit in `marks`; 1 if it was clear (the item's first touch in this call), else 0."""
    w, bit = j >> 6, np.uint64(1) << np.uint64(j & 63)
    first = (marks[w] & bit) == np.uint64(0)
    marks[w] |= bit
    return first


@numba.njit(cache=True, nogil=True)
def _merge_one(indptr, nbrs, scores, triggers, trig_w, use_max, exclude, acc, marks, touched, cand, bins, out_idx,
               out_sc):
    """Merge the neighbour lists of `triggers` into out_idx/out_sc (length k); returns count written.

    Scratch kept between calls, never cleared in full (each call restores what it touched): `acc` (n_items float64) is
    the merged score, 0 (sum) or -inf (max) between calls; `marks` has one bit per item, set while the item is touched
    in this call. A score with its mark beside it would take 16 bytes an item; 8 and a bit halve the lines a serving
    merge streams in (`_stream_in`). Excluded items are touched first with a score no finite merge can move (-inf for
    sum, +inf for max) and dropped before selection, so the accumulation loop has no data-dependent branch (an
    unpredictable first-touch branch cost as much as the rest of the loop). `touched` and `cand` (n_items + 1) collect
    the candidates; `bins` is `_top_k`'s."""
    banned = np.inf if use_max else -np.inf
    rest = -np.inf if use_max else 0.0
    bounds = np.empty((triggers.shape[0], 2), np.int64)
    bins[0] = _stream_in(indptr, nbrs, scores, triggers, acc, bounds) != 0.0  # keeps the loads; `_top_k` clears bins
    n_t = 0
    for e in range(exclude.shape[0]):
        j = exclude[e]
        touched[n_t] = j  # `touched` has n_items + 1 slots: the write past the last unique item is harmless
        n_t += _mark(marks, j)
        acc[j] = banned
    for t in range(triggers.shape[0]):
        w = trig_w[t]
        for p in range(bounds[t, 0], bounds[t, 1]):
            j = nbrs[p]
            touched[n_t] = j
            n_t += _mark(marks, j)
            if use_max:  # loop-invariant: hoisted by the compiler
                acc[j] = max(acc[j], w * scores[p])
            else:
                acc[j] += w * scores[p]
    n = 0
    for t in range(n_t):  # restore the scratch and compact the candidates (excluded ones dropped) in place
        j = touched[t]
        s = acc[j]
        acc[j] = rest
        marks[j >> 6] = 0  # the word's other touched items are in `touched` too
        touched[n], cand[n] = j, s
        n += s != banned
    return _top_k(cand, touched, n, bins, out_idx, out_sc)


@numba.njit(cache=True, nogil=True)
def _recent_triggers(hist, num_triggers, marks):
    """The last `num_triggers` distinct items of `hist`, most recent first (de-duplicated on `marks`, which it leaves
    clear)."""
    out = np.empty(min(num_triggers, hist.shape[0]), np.int64)
    n = 0
    for p in range(hist.shape[0] - 1, -1, -1):
        if n >= out.shape[0]:
            break
        j = hist[p]
        out[n] = j
        n += _mark(marks, j)
    for t in range(n):
        marks[out[t] >> 6] = 0
    return out[:n]


@numba.njit(cache=True, nogil=True)
def _recommend_one(indptr, nbrs, scores, hist, num_triggers, use_max, decay, exclude, acc, marks, touched, cand, bins,
                   out_idx, out_sc):
    """One user's merge in a single compiled call (serving: a request pays one dispatch, no NumPy temporaries).
    Returns (items written, triggers used)."""
    trig = _recent_triggers(hist, num_triggers, marks)
    w = np.ones(trig.shape[0], np.float64)  # sum and max: weight 1 (1.0 ** age, without 100 pow calls)
    if decay != 1.0:
        for a in range(trig.shape[0]):
            w[a] = decay ** float(a)  # C pow, as Python computes decay**age (an int exponent multiplies, last bit differs)
    m = _merge_one(indptr, nbrs, scores, trig, w, use_max, exclude, acc, marks, touched, cand, bins, out_idx, out_sc)
    return m, trig.shape[0]


@numba.njit(cache=True, nogil=True)
def _recommend_batch(indptr, nbrs, scores, h_indptr, h_items, num_triggers, use_max, decay, mask, acc, marks, touched,
                     cand, bins, out_idx, out_sc):
    empty = np.empty(0, np.int32)
    for u in range(h_indptr.shape[0] - 1):
        hist = h_items[h_indptr[u] : h_indptr[u + 1]]
        _recommend_one(indptr, nbrs, scores, hist, num_triggers, use_max, decay, hist if mask else empty, acc, marks,
                       touched, cand, bins, out_idx[u], out_sc[u])


@numba.njit(cache=True, nogil=True)
def _recommend_external(id_table, item_ids, indptr, nbrs, scores, ids, stop_on_unknown, num_triggers, use_max, decay,
                        exclude_seen, acc, marks, touched, cand, bins, out_items, out_sc):
    """`_recommend_one` from external ids to external ids (written to out_items/out_sc, length k) in one compiled call
    that returns only counts. A serving replica runs this between long stretches of HTTP handling, with cold caches;
    each separate NumPy step (id lookup, masks, gathers, returned arrays) then cost several times its warm time.
    Unknown ids are skipped and counted; with `stop_on_unknown` (or when no id is known) nothing is merged. Returns
    (items written, triggers used, unknown count)."""
    recent = np.empty(ids.shape[0], np.int32)
    n = 0
    for t in range(ids.shape[0]):
        x = ids[t]
        if id_table.shape[0]:
            j = id_table[x] if 0 <= x < id_table.shape[0] else -1
        else:
            p = np.searchsorted(item_ids, x)
            j = p if p < item_ids.shape[0] and item_ids[p] == x else -1
        recent[n] = j
        n += j >= 0
    n_unknown = ids.shape[0] - n
    if n == 0 or (n_unknown and stop_on_unknown):
        return 0, 0, n_unknown
    recent = recent[:n]
    m, n_trig = _recommend_one(indptr, nbrs, scores, recent, num_triggers, use_max, decay,
                               recent if exclude_seen else recent[:0], acc, marks, touched, cand, bins, out_items,
                               out_sc)
    for i in range(m):  # dense indices -> external ids, in place
        out_items[i] = item_ids[out_items[i]]
    return m, n_trig, n_unknown


def _scratch(n_items: int, use_max: bool) -> tuple[np.ndarray, ...]:
    """(acc, marks, touched, cand, bins) for `_recommend_one`, in the state it expects between calls."""
    return (np.full(n_items, -np.inf if use_max else 0.0), np.zeros(n_items // 64 + 1, np.uint64),
            np.empty(n_items + 1, np.int32), np.empty(n_items + 1), np.empty(SELECT_BINS, np.int32))


def _mode(how: str, decay: float) -> tuple[bool, float]:
    if how not in MERGE_MODES:
        raise ValueError(f"merge must be one of {MERGE_MODES}, got {how!r}")
    return how == "max", (decay if how == "recency" else 1.0)


def recommend_batch(
    neighbors: Neighbors,
    indptr: np.ndarray,
    items: np.ndarray,
    *,
    num_triggers: int,
    k: int,
    how: str = "sum",
    decay: float = 0.8,
    mask_history: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k per user from the user's history CSR (`items[indptr[u]:indptr[u+1]]`, oldest first).
    Returns (idx [n_users, k] int32, -1-padded; scores float64, -inf-padded)."""
    use_max, dec = _mode(how, decay)
    n = len(indptr) - 1
    out_idx = np.full((n, k), -1, np.int32)
    out_sc = np.full((n, k), -np.inf)
    _recommend_batch(
        neighbors.indptr, neighbors.neighbors, neighbors.scores, np.asarray(indptr, np.int64),
        np.asarray(items, np.int32), int(num_triggers), use_max, float(dec), bool(mask_history),
        *_scratch(neighbors.n_items, use_max), out_idx, out_sc,
    )
    return out_idx, out_sc


class FanoutMerger:
    """Per-request merge for serving: keeps the n_items-sized scratch between calls (thread-safe). `id_table`
    (external id -> dense index, -1 unknown; optional) replaces the binary search over `neighbors.item_ids` in
    `recommend_ids`."""

    def __init__(self, neighbors: Neighbors, how: str = "sum", decay: float = 0.8, id_table: np.ndarray | None = None):
        self.neighbors = neighbors
        self.id_table = np.empty(0, np.int32) if id_table is None else np.asarray(id_table, np.int32)
        self.use_max, self.decay = _mode(how, decay)
        self._scratch = _scratch(neighbors.n_items, self.use_max)
        self._no_exclusion = np.empty(0, np.int32)
        self._lock = threading.Lock()

    def recommend(
        self, recent: np.ndarray, k: int, num_triggers: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """`recent`: dense item indices, oldest first. Returns (idx, scores) best first, and the number of
        distinct recent items used as triggers."""
        nb = self.neighbors
        out_idx = np.empty(k, np.int32)
        out_sc = np.empty(k, np.float64)
        recent = np.asarray(recent, np.int32)
        excl = self._no_exclusion if exclude is None else np.asarray(exclude, np.int32)
        with self._lock:
            acc, marks, touched, cand, bins = self._scratch
            m, n_trig = _recommend_one(nb.indptr, nb.neighbors, nb.scores, recent, int(num_triggers), self.use_max,
                                       self.decay, excl, acc, marks, touched, cand, bins, out_idx, out_sc)
        return out_idx[:m], out_sc[:m], n_trig

    def recommend_ids(
        self, ids: np.ndarray, k: int, num_triggers: int, exclude_seen: bool, stop_on_unknown: bool = False
    ) -> tuple[np.ndarray, np.ndarray, int, int]:
        """`recommend` for external item ids (int64, oldest first), answering external ids: (items, scores, triggers
        used, number of unknown ids). Unknown ids are skipped; with `stop_on_unknown`, or when none is known, the
        answer is empty. With `exclude_seen` the known recent items are not recommended."""
        nb = self.neighbors
        items, scores = np.empty(k, np.int64), np.empty(k, np.float64)
        with self._lock:
            acc, marks, touched, cand, bins = self._scratch
            m, n_trig, n_unknown = _recommend_external(self.id_table, nb.item_ids, nb.indptr, nb.neighbors, nb.scores,
                                                       ids, bool(stop_on_unknown), int(num_triggers), self.use_max,
                                                       self.decay, bool(exclude_seen), acc, marks, touched, cand,
                                                       bins, items, scores)
        return (items, scores, n_trig, n_unknown) if m == k else (items[:m], scores[:m], n_trig, n_unknown)
