"""Swing: the Apache Flink ML golden vector, a brute-force oracle, the sign of beta, and the caps."""

from itertools import combinations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_i2i.data import sequences_from_interactions
from llm_i2i.i2i.swing import Swing, SwingConfig, build_graph, reservoir_sample, swing_topk


def _seqs(rows):
    return sequences_from_interactions(
        pa.table({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows], "timestamp": list(range(len(rows)))})
    )


def _scores(nb):
    """{(item_id, neighbor_id): score} in external ids."""
    out = {}
    for i in range(nb.n_items):
        n, s = nb.row(i)
        for j, v in zip(n, s):
            out[(int(nb.item_ids[i]), int(nb.item_ids[j]))] = float(v)
    return out


FLINK_ROWS = [(0, 10), (0, 11), (0, 12), (1, 13), (1, 12), (2, 10), (2, 11), (2, 12), (3, 13), (3, 12),
              (4, 12), (4, 10), (4, 11), (4, 12), (4, 13)]


def test_flink_ml_golden_vector():
    """Apache Flink ML SwingTest: min 2 / max 3 items per user, alpha1=15, alpha2=0, beta=0.3; user 4 is dropped."""
    cfg = SwingConfig(min_items_per_user=2, max_items_per_user=3, alpha1=15, alpha2=0, beta=0.3)
    model = Swing(cfg)
    got = _scores(model.fit(_seqs(FLINK_ROWS)))
    assert got[(10, 11)] == pytest.approx(0.058845768947156235, rel=1e-12)
    assert got[(10, 12)] == pytest.approx(0.058845768947156235, rel=1e-12)
    assert got[(12, 13)] == pytest.approx(0.09134833828228624, rel=1e-12)
    assert model.report["users_above_max_items"] == 1


def brute_force_swing(user_sets, alpha1, alpha2, beta):
    """Straight from the definition: every unordered user pair, every item pair they share."""
    w = {u: (len(s) + alpha1) ** -beta for u, s in user_sets.items()}
    sim = {}
    for u, v in combinations(sorted(user_sets), 2):
        common = user_sets[u] & user_sets[v]
        for i in common:
            for j in common:
                if i != j:
                    sim[(i, j)] = sim.get((i, j), 0.0) + w[u] * w[v] / (alpha2 + len(common))
    return sim


@given(
    st.lists(st.lists(st.integers(0, 14), min_size=1, max_size=9), min_size=2, max_size=25),
    st.sampled_from([0.0, 5.0, 15.0]),
    st.sampled_from([0.0, 1.0]),
    st.sampled_from([0.0, 0.3, 1.0]),
)
@settings(max_examples=60, deadline=None)
def test_matches_brute_force_oracle(lists, alpha1, alpha2, beta):
    rows = [(u, i) for u, seq in enumerate(lists) for i in seq]
    cfg = SwingConfig(k=1000, alpha1=alpha1, alpha2=alpha2, beta=beta, min_items_per_user=1)
    got = _scores(Swing(cfg, n_threads=2).fit(_seqs(rows)))
    want = brute_force_swing({u: set(seq) for u, seq in enumerate(lists)}, alpha1, alpha2, beta)
    want = {k: v for k, v in want.items() if v > 0}
    assert got.keys() == want.keys()
    for key, v in want.items():
        assert got[key] == pytest.approx(v, rel=1e-9)


def test_rows_sorted_by_score_then_index_and_k_respected():
    rng = np.random.default_rng(0)
    rows = [(u, int(i)) for u in range(60) for i in rng.choice(30, 6, replace=False)]
    nb = Swing(SwingConfig(k=5, min_items_per_user=1)).fit(_seqs(rows))
    for i in range(nb.n_items):
        n, s = nb.row(i)
        assert len(n) <= 5 and i not in n
        order = np.lexsort((n, -s))
        assert (order == np.arange(len(n))).all()


def test_positive_beta_down_weights_heavy_users():
    """Pin the sign (Alink's default userBeta=-0.35 would up-weight heavy users)."""
    light = [(0, 1), (0, 2), (1, 1), (1, 2)]
    heavy = [(0, 1), (0, 2), (1, 1), (1, 2)] + [(0, 100 + t) for t in range(20)] + [(1, 200 + t) for t in range(20)]
    s_light = _scores(Swing(SwingConfig(alpha1=1, beta=0.5)).fit(_seqs(light)))[(1, 2)]
    s_heavy = _scores(Swing(SwingConfig(alpha1=1, beta=0.5)).fit(_seqs(heavy)))[(1, 2)]
    assert s_heavy < s_light
    g = build_graph(_seqs(heavy), SwingConfig(alpha1=1, beta=0.5))
    deg = np.diff(g.user_indptr)
    assert np.all(np.diff(g.user_weight[np.argsort(deg)]) <= 0)
    with pytest.raises(ValueError, match="up-weights heavy users"):
        SwingConfig(beta=-0.35).validate()
    SwingConfig(beta=-0.35, allow_negative_beta=True).validate()


def test_user_caps_drop_or_keep_recent():
    rows = [(0, i) for i in (1, 2, 3, 4, 5)] + [(1, 4), (1, 5)] + [(2, 4), (2, 5), (2, 1)]
    drop = build_graph(_seqs(rows), SwingConfig(max_items_per_user=3, over_max_items="drop"))
    assert np.diff(drop.user_indptr).tolist() == [0, 2, 3]
    keep = build_graph(_seqs(rows), SwingConfig(max_items_per_user=3, over_max_items="keep_recent"))
    s = _seqs(rows)
    assert s.item_ids[keep.user_items[keep.user_indptr[0]:keep.user_indptr[1]]].tolist() == [3, 4, 5]
    mini = build_graph(_seqs(rows), SwingConfig(min_items_per_user=3))
    assert np.diff(mini.user_indptr).tolist() == [5, 0, 3] and mini.report["users_below_min_items"] == 1


def test_hot_item_users_are_a_seeded_reservoir_sample():
    rows = [(u, 0) for u in range(50)] + [(u, 1) for u in range(50)]
    g1 = build_graph(_seqs(rows), SwingConfig(max_users_per_item=10, seed=3))
    g2 = build_graph(_seqs(rows), SwingConfig(max_users_per_item=10, seed=3))
    g3 = build_graph(_seqs(rows), SwingConfig(max_users_per_item=10, seed=4))
    assert np.diff(g1.item_indptr).tolist() == [10, 10]
    assert np.array_equal(g1.item_users, g2.item_users)
    assert not np.array_equal(g1.item_users, g3.item_users)
    assert g1.report["items_sampled_to_max_users"] == 2


def test_reservoir_sample_is_uniform():
    counts = np.zeros(20)
    for key in range(3000):
        counts[reservoir_sample(np.arange(20), 5, seed=0, key=key)] += 1
    # each value kept with probability 5/20: 750 expected, binomial sd ~ 24
    assert np.all(np.abs(counts - 750) < 120)


def skewed_rows(seed: int, n_users: int, n_items: int, max_len: int) -> list[tuple[int, int]]:
    """Zipf(1.8) user lengths and item popularity ~ rank^-0.9 (the benchmark's shape, small): heavy users
    who meet in every hot item, and hot items past the user cap."""
    rng = np.random.default_rng(seed)
    lens = np.minimum(rng.zipf(1.8, n_users), max_len)
    p = np.arange(1, n_items + 1, dtype=np.float64) ** -0.9
    p /= p.sum()
    perm = rng.permutation(n_items)
    return [(u, int(perm[i])) for u in range(n_users) for i in rng.choice(n_items, lens[u], p=p)]


def brute_force_capped(g, alpha2):
    """The definition on the capped graph: pairs of item i's (sampled) users, intersected on full lists."""
    lists = [set(g.user_items[g.user_indptr[u] : g.user_indptr[u + 1]].tolist()) for u in range(len(g.user_indptr) - 1)]
    sim = [dict() for _ in range(g.n_items)]
    for i in range(g.n_items):
        for u, v in combinations(g.item_users[g.item_indptr[i] : g.item_indptr[i + 1]].tolist(), 2):
            common = lists[u] & lists[v]
            w = g.user_weight[u] * g.user_weight[v] / (alpha2 + len(common))
            for j in common - {i}:
                sim[i][j] = sim[i].get(j, 0.0) + w
    return sim


@given(st.integers(0, 10_000), st.sampled_from([(5, 8), (12, 30), (1000, 1000)]), st.integers(1, 12),
       st.sampled_from([0.0, 1.0]))
@settings(max_examples=40, deadline=None)
def test_skewed_graphs_top_k_equals_brute_force(seed, caps, k, alpha2):
    """Skewed graphs with the user and item caps active: the same top-K as the definition (ranks may swap
    only between scores equal to 1e-12, where float summation order decides)."""
    seqs = _seqs(skewed_rows(seed, n_users=70, n_items=40, max_len=30))
    cfg = SwingConfig(k=k, alpha2=alpha2, max_users_per_item=caps[0], max_items_per_user=caps[1], seed=seed)
    g = build_graph(seqs, cfg)
    idx, sc, _ = swing_topk(g, k, alpha2)
    for i, want in enumerate(brute_force_capped(g, alpha2)):
        ranked = sorted(want.items(), key=lambda t: (-t[1], t[0]))[:k]
        got = [(int(j), float(s)) for j, s in zip(idx[i], sc[i]) if j >= 0]
        assert len(got) == len(ranked)
        for (gj, gs), (wj, ws) in zip(got, ranked):
            assert gs == pytest.approx(ws, rel=1e-12)
            assert want[gj] == pytest.approx(ws, rel=1e-12)  # a swap only between (near-)equal scores
            if gj != wj:
                assert want[gj] == pytest.approx(want[wj], rel=1e-12)


def test_sharded_runner_taken_past_the_work_threshold_only():
    """A given runner is used exactly when the estimated work reaches `sharded_min_work`; the threads path
    otherwise. Both give the same neighbours (the fake runner delegates to the threaded kernel)."""
    seqs = _seqs(skewed_rows(3, n_users=60, n_items=30, max_len=20))
    calls = []

    def runner(graph, item_ids, k, alpha2):
        calls.append(graph.n_edges)
        return Swing(SwingConfig(k=k, alpha2=alpha2, min_items_per_user=1)).fit(seqs), {"shards": 3, "intersection_steps": 7}

    threads = Swing(SwingConfig(k=5))
    want = threads.fit(seqs).to_table()
    assert threads.report["path"] == "threads" and not calls
    below = Swing(SwingConfig(k=5, sharded_min_work=threads.report["estimated_work"] + 1), runner=runner)
    assert below.fit(seqs).to_table().equals(want) and below.report["path"] == "threads" and not calls
    past = Swing(SwingConfig(k=5, sharded_min_work=threads.report["estimated_work"]), runner=runner)
    past.fit(seqs)
    assert calls and past.report["path"] == "sharded" and past.report["shards"] == 3
