"""The fan-out merge against a dictionary-based reference, and batch == per-request."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_i2i.kernels.merge import SELECT_BINS, FanoutMerger, _top_k, recommend_batch
from llm_i2i.i2i.base import Neighbors


def random_neighbors(rng, n_items, k):
    rows = []
    for i in range(n_items):
        m = int(rng.integers(0, k + 1))
        nb = rng.choice(np.setdiff1d(np.arange(n_items), [i]), size=min(m, n_items - 1), replace=False)
        sc = np.round(rng.random(len(nb)) * 2 - 1, 1)  # rounding makes ties common; negative and zero scores too
        order = np.lexsort((nb, -sc))
        rows.append((nb[order], sc[order]))
    return Neighbors.from_rows(rows, np.arange(n_items) * 10)


def reference(nb, hist, m, k, how, decay, mask):
    trig = []
    for j in hist[::-1]:
        if j not in trig:
            trig.append(int(j))
        if len(trig) == m:
            break
    acc = {}
    for age, i in enumerate(trig):
        w = decay**age if how == "recency" else 1.0
        for j, s in zip(*nb.row(i)):
            if mask and j in set(hist.tolist()):
                continue
            v = w * float(s)  # float64 like the kernel (a float32 scalar would keep w * s in float32)
            acc[int(j)] = max(acc[int(j)], v) if (how == "max" and j in acc) else acc.get(int(j), 0.0) + v
    ranked = sorted(acc.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return [j for j, _ in ranked], [s for _, s in ranked]


@given(st.integers(0, 10_000), st.sampled_from(["sum", "max", "recency"]), st.booleans(), st.integers(1, 6), st.integers(1, 12))
@settings(max_examples=80, deadline=None)
def test_batch_and_single_match_reference(seed, how, mask, m, k):
    rng = np.random.default_rng(seed)
    nb = random_neighbors(rng, 25, 8)
    hists = [rng.integers(0, 25, int(rng.integers(0, 9))) for _ in range(6)]
    indptr = np.concatenate([[0], np.cumsum([len(h) for h in hists])])
    items = np.concatenate(hists).astype(np.int32) if indptr[-1] else np.zeros(0, np.int32)
    idx, sc = recommend_batch(nb, indptr, items, num_triggers=m, k=k, how=how, decay=0.7, mask_history=mask)
    merger = FanoutMerger(nb, how=how, decay=0.7)
    for u, h in enumerate(hists):
        want_ids, want_sc = reference(nb, h, m, k, how, 0.7, mask)
        got = idx[u][idx[u] >= 0].tolist()
        assert got == want_ids
        np.testing.assert_allclose(sc[u][: len(got)], want_sc, rtol=1e-12)
        one_ids, one_sc, triggers = merger.recommend(h, k=k, num_triggers=m, exclude=h if mask else None)
        assert one_ids.tolist() == want_ids
        np.testing.assert_allclose(one_sc, want_sc, rtol=1e-12)
        assert triggers == min(m, len(set(h.tolist())))


@given(st.integers(0, 10_000), st.sampled_from(["sum", "max", "recency"]), st.booleans(), st.booleans(), st.integers(1, 6),
       st.integers(1, 12))
@settings(max_examples=80, deadline=None)
def test_external_id_path_matches_reference(seed, how, exclude_seen, with_table, m, k):
    """`recommend_ids` (the serving path) = the reference on the known ids, unknown ids skipped and counted; the
    direct-address id table and the binary search over sorted ids agree."""
    rng = np.random.default_rng(seed)
    nb = random_neighbors(rng, 25, 8)  # external ids 0, 10, ..., 240
    table = np.full(241, -1, np.int32)
    table[nb.item_ids] = np.arange(25, dtype=np.int32)
    merger = FanoutMerger(nb, how=how, decay=0.7, id_table=table if with_table else None)
    h = rng.integers(0, 25, int(rng.integers(0, 9)))
    ext = nb.item_ids[h].tolist()
    unknown = [int(x) for x in rng.choice([-10, -1, 5, 239, 241, 10**12, -(2**63)], int(rng.integers(0, 3)))]
    for x in unknown:
        ext.insert(int(rng.integers(0, len(ext) + 1)), x)
    items, scores, triggers, n_unknown = merger.recommend_ids(np.array(ext, np.int64), k, m, exclude_seen)
    want_ids, want_sc = reference(nb, h, m, k, how, 0.7, exclude_seen)
    assert items.tolist() == nb.item_ids[want_ids].tolist() and n_unknown == len(unknown)
    np.testing.assert_allclose(scores, want_sc, rtol=1e-12)
    assert triggers == min(m, len(set(h.tolist())))
    stopped = merger.recommend_ids(np.array(ext, np.int64), k, m, exclude_seen, stop_on_unknown=True)
    assert (len(stopped[0]), stopped[2], stopped[3]) == ((0, 0, len(unknown)) if unknown else (len(items), triggers, 0))


@given(st.integers(0, 10_000), st.integers(0, 3_000), st.integers(0, 300),
       st.sampled_from(["ties", "wide", "uniform", "zeros", "signed_zeros", "narrow"]))
@settings(max_examples=150, deadline=None)
def test_top_k_matches_full_sort(seed, n, k, kind):
    """The histogram-thresholded selection (bucket sort, or the heap when a bucket is crowded) gives exactly the first k
    of a full sort by (score desc, index asc): many ties, magnitudes from 1e-300 to 1e300 of both signs, uniform scores,
    +0.0 beside -0.0, and spans narrower than the bins."""
    rng = np.random.default_rng(seed)
    if kind == "ties":
        sc = rng.integers(-3, 4, n).astype(np.float64)
    elif kind == "wide":
        sc = rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(-300, 300, n)
    elif kind == "uniform":
        sc = rng.random(n)
    elif kind == "zeros":
        sc = rng.choice([0.0, -0.0, 1e-310, -1e-310, 1.0], n)
    elif kind == "signed_zeros":  # adjacent order keys: a bin boundary between -0.0 and +0.0 must not split the tie
        sc = rng.choice([0.0, -0.0], n)
    else:
        sc = 1.0 + rng.integers(0, 5, n) * np.finfo(np.float64).eps
    idx = rng.permutation(max(n, 1) * 3)[:n].astype(np.int32)
    out_idx, out_sc = np.empty(k, np.int32), np.empty(k)
    m = _top_k(sc.copy(), idx.copy(), n, np.empty(SELECT_BINS, np.int32), out_idx, out_sc)
    order = np.lexsort((idx, -sc))[:k]
    assert m == min(n, k)
    assert out_idx[:m].tolist() == idx[order].tolist()
    assert out_sc[:m].tolist() == sc[order].tolist()


def test_unknown_merge_mode_is_refused():
    nb = random_neighbors(np.random.default_rng(0), 5, 2)
    with pytest.raises(ValueError, match="merge must be one of"):
        FanoutMerger(nb, how="mean")
