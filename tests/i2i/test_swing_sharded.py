"""Sharded Swing: planning properties, and the Ray job gives exactly the single-node Swing answer, for
1, 2 and 7 shards, on uniform and power-law random graphs."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_i2i.data.sequences import Sequences, sequences_from_interactions
from llm_i2i.i2i.base import NEIGHBORS_SCHEMA
from llm_i2i.i2i.swing import (
    Swing,
    SwingConfig,
    SwingGraph,
    SwingScratch,
    build_graph,
    item_work,
    swing_topk,
    user_list_sums,
)
from llm_i2i.i2i.swing_shards import balanced_ranges, chunk_ranges


def random_sequences(seed: int, n_users: int, n_items: int, skew: float, mean_len: float) -> Sequences:
    """Users with geometric lengths; items drawn ~ rank^-skew (0 = uniform), ids permuted."""
    rng = np.random.default_rng(seed)
    lens = rng.geometric(1.0 / mean_len, n_users).astype(np.int64)
    p = (np.arange(1, n_items + 1) ** -skew)
    p /= p.sum()
    items = rng.permutation(n_items)[rng.choice(n_items, lens.sum(), p=p)].astype(np.int32)
    indptr = np.zeros(n_users + 1, np.int64)
    np.cumsum(lens, out=indptr[1:])
    return Sequences(np.arange(n_users, dtype=np.int64) * 7 + 3, indptr, items, np.arange(n_items, dtype=np.int64) * 10 + 1)


CASES = {
    "uniform": dict(n_users=150, n_items=60, skew=0.0, mean_len=6.0),
    "power_law": dict(n_users=300, n_items=120, skew=1.2, mean_len=8.0),
}
# small caps so the reservoir and user caps are exercised
CFG = dict(k=15, max_users_per_item=40, max_items_per_user=30, alpha2=0.5)


def _graph(seed, case, **cfg):
    seqs = random_sequences(seed, **CASES[case])
    c = SwingConfig(**{**CFG, **cfg})
    return seqs, c, build_graph(seqs, c)


# --------------------------------------------------------------------------- planning (pure)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1e6), min_size=0, max_size=80), st.integers(1, 9))
def test_balanced_ranges_cover_and_balance(work, n):
    work = np.asarray(work, np.float64)
    b = balanced_ranges(work, n)
    assert len(b) == n + 1 and b[0] == 0 and b[-1] == len(work)
    assert np.all(np.diff(b) >= 0)
    loads = np.array([work[b[p] : b[p + 1]].sum() for p in range(n)])
    bound = work.sum() / n + (work.max() if len(work) else 0)
    assert loads.max() <= bound * (1 + 1e-9) + 1e-9


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 100), min_size=1, max_size=60), st.integers(1, 7), st.floats(1, 300))
def test_chunk_ranges_bounded(work, max_items, max_work):
    work = np.asarray(work, np.float64)
    lo, hi = 0, len(work)
    b = chunk_ranges(work, lo, hi, max_items, max_work)
    assert b[0] == lo and b[-1] == hi and np.all(np.diff(b) >= 1)
    for s, e in zip(b[:-1], b[1:]):
        assert e - s <= max_items
        assert e - s == 1 or work[s:e].sum() <= max_work * (1 + 1e-12)


@pytest.mark.parametrize("case", sorted(CASES))
def test_item_work_bounds_measured_steps(case):
    _, c, g = _graph(1, case)
    work = item_work(g)
    for i in range(g.n_items):
        _, _, steps = swing_topk(g, c.k, c.alpha2, np.array([i]))
        assert steps <= work[i] - 1 + 1e-9


# --------------------------------------------------------------------------- Ray actors


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, address="local", _node_ip_address="127.0.0.1",
             log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.parametrize("case, shard_counts", [("power_law", (1, 2, 7)), ("uniform", (2,))])
def test_ray_shards_equal_single_node(ray_cluster, tmp_path, case, shard_counts):
    """Each actor start costs ~1 s on 2 cores: all of 1/2/7 shards on the skewed graph only."""
    from ray_jobs.swing_sharded import run_sharded_swing

    seqs, c, g = _graph(11, case)
    ref_table = Swing(c, n_threads=1).fit(seqs).to_table()
    for shards in shard_counts:
        out = tmp_path / f"idx{shards}"
        stats = run_sharded_swing(g, seqs.item_ids, shards, out, c.k, c.alpha2, chunk_items=7, chunk_work=500.0,
                                  cpus_per_shard=0.25)
        table = pq.read_table(out / "neighbors.parquet")
        assert table.schema.equals(NEIGHBORS_SCHEMA)
        assert table.equals(ref_table), f"{shards} shards differ from single-node Swing"
        assert stats["rows"] == ref_table.num_rows and stats["shards"] == shards
        assert stats["intersection_steps"] == swing_topk(g, c.k, c.alpha2)[2]
        assert all(s["ru_maxrss_bytes"] > 0 for s in stats["per_shard"])
        assert (out / "manifest.json").exists() and not (out / "parts").exists()


@pytest.mark.ray
def test_cli_entry_point(ray_cluster, tmp_path):
    from ray_jobs.swing_sharded import main

    table = random_sequences(5, **CASES["power_law"]).to_interactions()
    inter = tmp_path / "interactions.parquet"
    pq.write_table(table, inter)
    seqs = sequences_from_interactions(table)  # the vocabulary the job sees (only clicked items)
    assert main(["--interactions", str(inter), "--shards", "2", "--out", str(tmp_path / "out"),
                 "--set", "k=10", "--set", "max_users_per_item=30"]) == 0
    got = pq.read_table(tmp_path / "out" / "neighbors.parquet")
    ref = Swing(SwingConfig(k=10, max_users_per_item=30), n_threads=1).fit(seqs).to_table()
    assert got.equals(ref)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(sorted(CASES)), st.integers(1, 20), st.integers(1, 5))
def test_chunks_with_one_scratch_equal_one_call(seed, case, k, n_chunks):
    """One scratch reused across chunks (marks and stamps carried over) == one call over all items
    (small k forces the bounded top-k's partition path and its ties)."""
    _, c, g = _graph(seed, case)
    ref_idx, ref_sc, ref_steps = swing_topk(g, k, c.alpha2)
    scratch = SwingScratch(g)
    steps = 0
    for chunk in np.array_split(np.arange(g.n_items), n_chunks):
        idx, sc, st_ = swing_topk(g, k, c.alpha2, chunk, scratch)
        np.testing.assert_array_equal(idx, ref_idx[chunk])
        np.testing.assert_array_equal(sc, ref_sc[chunk])
        steps += st_
    assert steps == ref_steps


def test_user_list_sums_with_empty_items_anywhere():
    """Items without users at the start, middle and end (as in a shard's sub-graph): the sums that size
    the kernel's buffers equal a direct count, and the kernel on that graph equals the full graph's rows."""
    _, c, g = _graph(2, "power_law")
    lo, hi = 10, 50
    n_i = np.diff(g.item_indptr)
    n_i[:lo] = 0
    n_i[hi:] = 0
    n_i[30] = 0
    indptr = np.concatenate([[0], np.cumsum(n_i)])
    keep = np.concatenate([g.item_users[g.item_indptr[i] : g.item_indptr[i + 1]] for i in range(g.n_items) if n_i[i]])
    sub = SwingGraph(g.user_indptr, g.user_items, indptr, keep.astype(np.int32), g.user_weight, g.n_items, {})
    user_len = np.diff(sub.user_indptr)
    want = [int(user_len[sub.item_users[sub.item_indptr[i] : sub.item_indptr[i + 1]]].sum()) for i in range(sub.n_items)]
    assert user_list_sums(sub).tolist() == want
    rows = np.array([i for i in range(lo, hi) if i != 30])
    np.testing.assert_array_equal(swing_topk(sub, c.k, c.alpha2, rows)[1], swing_topk(g, c.k, c.alpha2, rows)[1])


@pytest.mark.ray
def test_index_command_takes_the_sharded_path_on_a_cluster(ray_cluster, tmp_path, monkeypatch):
    """`llm-i2i index` with RAY_ADDRESS set hands a big enough Swing fit (here: any, sharded_min_work=0) to the
    Ray job; the index equals the one built on local threads."""
    import json

    from llm_i2i.cli import main

    inter = tmp_path / "interactions.parquet"
    pq.write_table(random_sequences(5, **CASES["power_law"]).to_interactions(), inter)
    assert main(["index", "--interactions", str(inter), "--out", str(tmp_path / "threads"), "--set", "k=10"]) == 0
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert main(["index", "--interactions", str(inter), "--out", str(tmp_path / "sharded"), "--set", "k=10",
                 "--set", "sharded_min_work=0"]) == 0
    report = json.loads((tmp_path / "sharded" / "manifest.json").read_text())["fit_report"]
    assert report["path"] == "sharded" and report["shards"] >= 1
    got, want = (pq.read_table(tmp_path / d / "neighbors.parquet") for d in ("sharded", "threads"))
    assert got.equals(want)
