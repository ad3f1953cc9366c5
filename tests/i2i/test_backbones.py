"""All four backbones against the shared contract, plus oracles for BM25, BPR and the YoutubeDNN pieces."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from llm_i2i.i2i.base import cosine_neighbors
from llm_i2i.i2i.bm25 import BM25, BM25Config, user_item_counts
from llm_i2i.i2i.bpr import BPR, BPRConfig
from tests.conftest import sequences_from_lists
from tests.i2i.contract import BackboneContract, random_train

YOUTUBEDNN_FAST = dict(
    embedding_dim=16, hidden_dims=[32, 16], num_negatives=8, batch_size=32, max_epochs=15, learning_rate=0.01,
    init_std=0.1,
)


class TestSwingContract(BackboneContract):
    backbone = "swing"
    fast_config = {"min_items_per_user": 1}
    seeded = False  # its seed only drives the hot-item sample, which the tiny fixtures never trigger


class TestBM25Contract(BackboneContract):
    backbone = "bm25"
    fast_config = {"K": 20}
    seeded = False


class TestBPRContract(BackboneContract):
    backbone = "bpr"
    fast_config = {"factors": 8, "iterations": 100, "learning_rate": 0.05}


class TestYoutubeDNNContract(BackboneContract):
    backbone = "youtubednn"
    fast_config = YOUTUBEDNN_FAST


# ---------------------------------------------------------------- BM25 oracle


def brute_force_bm25(counts: np.ndarray, K1: float, B: float) -> np.ndarray:
    """implicit 0.7.3's BM25Recommender similarity, dense: items are BM25 documents, users terms."""
    X = counts.T.astype(np.float64)  # items x users
    n_docs = X.shape[0]
    df = (X > 0).sum(0)
    idf = np.log(n_docs) - np.log1p(df)
    length = X.sum(1)
    norm = (1.0 - B) + B * length / length.mean()  # mean over every item, empty ones included
    W = np.where(X > 0, X * (K1 + 1.0) / (K1 * norm[:, None] + X) * idf[None, :], 0.0)
    return W @ W.T


def oracle_rows(sim: np.ndarray, support: np.ndarray, K: int, k: int) -> list[tuple[list[int], np.ndarray]]:
    """Per item: keep its K best entries (self included), drop self, sort (score desc, index), cut k."""
    rows = []
    for i in range(sim.shape[0]):
        cand = np.flatnonzero(support[i])
        cand = cand[np.lexsort((cand, -sim[i, cand]))][:K]
        cand = cand[cand != i][:k]
        rows.append((cand.tolist(), sim[i, cand]))
    return rows


@pytest.mark.parametrize("K1,B", [(1.2, 0.75), (100.0, 0.8), (0.5, 0.0)])
def test_bm25_matches_brute_force(K1, B, rng):
    hist = [list(rng.integers(0, 12, size=rng.integers(1, 10))) for _ in range(30)]  # repeats -> counts > 1
    train = sequences_from_lists(hist, n_items=14)
    counts = user_item_counts(train).toarray()
    sim = brute_force_bm25(counts, K1, B)
    support = (counts.T > 0).astype(int) @ (counts > 0).astype(int) > 0
    nb = BM25(BM25Config(k=200, K=100, K1=K1, B=B)).fit(train)
    for i, (want_idx, want_sc) in enumerate(oracle_rows(sim, support, K=100, k=200)):
        idx, sc = nb.row(i)
        # same neighbours with the same scores; the order may differ only inside float-noise ties
        assert sorted(idx.tolist()) == sorted(want_idx), f"item {i}"
        np.testing.assert_allclose(sc, sim[i, idx], rtol=1e-12)
        np.testing.assert_allclose(sc, want_sc, rtol=1e-12)


def test_bm25_keeps_at_most_K_entries_self_included(rng):
    """implicit's K counts the item itself: with K=4 an item keeps at most 3 others, the best ones."""
    hist = [list(rng.integers(0, 12, size=rng.integers(2, 10))) for _ in range(40)]
    train = sequences_from_lists(hist, n_items=12)
    counts = user_item_counts(train).toarray()
    sim = brute_force_bm25(counts, 1.2, 0.75)
    nb = BM25(BM25Config(K=4)).fit(train)
    for i in range(train.n_items):
        idx, sc = nb.row(i)
        assert len(idx) <= 3
        others = np.setdiff1d(np.flatnonzero(sim[i] != 0), np.append(idx, i))
        if len(idx) and len(others):
            assert sc.min() >= sim[i, others].max() - 1e-12, f"item {i} kept a worse neighbour than it dropped"


def test_user_item_counts_sums_repeats():
    m = user_item_counts(sequences_from_lists([[0, 1, 0], [2]], n_items=4))
    assert isinstance(m, sp.csr_matrix) and m.shape == (2, 4)
    np.testing.assert_array_equal(m.toarray(), [[2, 1, 0, 0], [0, 0, 1, 0]])
    # rows past each user's real ones (LLM-I2I's synthetic items) count synthetic_weight
    weighted = user_item_counts(sequences_from_lists([[0, 1, 0], [2, 3]], n_items=4), np.array([2, 1]), 0.1)
    np.testing.assert_allclose(weighted.toarray(), [[1.1, 1, 0, 0], [0, 0, 1, 0.1]])


@pytest.mark.parametrize("weight", [0.01, 0.3, 1.0])
def test_bm25_down_weights_synthetic_rows_like_brute_force(weight, rng):
    hist = [list(rng.integers(0, 12, size=rng.integers(1, 10))) for _ in range(30)]
    n_real = np.array([rng.integers(0, len(h) + 1) for h in hist])
    train = sequences_from_lists(hist, n_items=14)
    counts = np.zeros((len(hist), 14))
    for u, h in enumerate(hist):  # brute force: position p of user u counts 1 if p < n_real[u], else weight
        for p, item in enumerate(h):
            counts[u, item] += 1.0 if p < n_real[u] else weight
    sim = brute_force_bm25(counts, 1.2, 0.75)
    support = (counts.T > 0).astype(int) @ (counts > 0).astype(int) > 0
    nb = BM25(BM25Config(k=200, K=100, synthetic_weight=weight)).fit(train, None, n_real)
    for i, (want_idx, _) in enumerate(oracle_rows(sim, support, K=100, k=200)):
        idx, sc = nb.row(i)
        assert sorted(idx.tolist()) == sorted(want_idx), f"item {i}"
        np.testing.assert_allclose(sc, sim[i, idx], rtol=1e-12)
    all_real = BM25(BM25Config(synthetic_weight=weight)).fit(train, None, train.lengths)
    plain = BM25().fit(train)
    assert all(np.array_equal(a, b) for a, b in zip(
        (all_real.indptr, all_real.neighbors, all_real.scores), (plain.indptr, plain.neighbors, plain.scores)))
    with pytest.raises(ValueError, match="synthetic_weight"):
        BM25Config(synthetic_weight=0.0).validate()


# ---------------------------------------------------------------- BPR / cosine oracle


def brute_force_cosine_rows(emb: np.ndarray, active: np.ndarray, k: int) -> list[list[int]]:
    rows = []
    for i in range(len(emb)):
        if not active[i] or not np.any(emb[i]):
            rows.append([])
            continue
        cand = np.array([j for j in range(len(emb)) if j != i and active[j] and np.any(emb[j])])
        cos = np.array([emb[i] @ emb[j] / np.linalg.norm(emb[i]) / np.linalg.norm(emb[j]) for j in cand])
        rows.append(cand[np.lexsort((cand, -cos))][:k].tolist() if len(cand) else [])
    return rows


@pytest.mark.parametrize("block_rows", [1, 3, 64])
def test_cosine_neighbors_matches_brute_force(block_rows, rng):
    emb = rng.normal(size=(20, 5))
    emb[4] = 0.0  # zero vector: no direction, no neighbours
    emb[7] = emb[2]  # a duplicate of item 2: exact ties with it everywhere, broken by index
    active = np.ones(20, bool)
    active[[5, 11]] = False
    nb = cosine_neighbors(emb, 6, np.arange(20) + 100, active=active, block_rows=block_rows)
    want = brute_force_cosine_rows(emb, active, 6)
    assert [nb.row(i)[0].tolist() for i in range(20)] == want
    assert nb.row(2)[0][0] == 7 and nb.row(7)[0][0] == 2


def test_bpr_neighbours_are_cosine_over_its_own_factors():
    train = random_train()
    model = BPR(BPRConfig(k=5, factors=8, iterations=20, block_rows=4))
    nb = model.fit(train)
    assert model.item_factors.shape == (train.n_items, 9)  # implicit appends the item-bias column
    active = train.item_counts() > 0
    want = brute_force_cosine_rows(model.item_factors, active, 5)
    assert [nb.row(i)[0].tolist() for i in range(train.n_items)] == want
    for i in range(train.n_items):
        idx, sc = nb.row(i)
        f = model.item_factors
        cos = [f[i] @ f[j] / np.linalg.norm(f[i]) / np.linalg.norm(f[j]) for j in idx]
        np.testing.assert_allclose(sc, cos, rtol=1e-9)


# ---------------------------------------------------------------- YoutubeDNN pieces


def test_prefix_examples_and_histories_match_a_loop():
    from llm_i2i.i2i.youtubednn import last_histories, prefix_examples

    hist = [[3, 1, 4, 1, 5], [9], [], [2, 6]]
    train = sequences_from_lists(hist, n_items=10)
    L, pad = 3, 10
    users, targets, windows = prefix_examples(train, L)
    want = [(u, s[t], ([pad] * L + s[:t])[-L:]) for u, s in enumerate(hist) for t in range(1, len(s))]
    assert users.tolist() == [w[0] for w in want]
    assert targets.tolist() == [w[1] for w in want]
    assert windows.tolist() == [w[2] for w in want]
    assert last_histories(train, L).tolist() == [([pad] * L + s)[-L:] for s in hist]


def test_youtubednn_early_stopping_and_report():
    from llm_i2i.i2i.youtubednn import YoutubeDNN, YoutubeDNNConfig

    train = random_train()
    valid = np.array([s[-1] if len(s) else -1 for s in (train.user(u) for u in range(train.n_users))])
    cfg = YoutubeDNNConfig(k=4, **{**YOUTUBEDNN_FAST, "hidden_dims": (32, 16), "max_epochs": 30, "patience": 2})
    model = YoutubeDNN(cfg)
    model.fit(train, valid)
    epochs = model.report["epochs"]
    recalls = [e["valid_recall@10"] for e in epochs]
    best = model.report["best_epoch"]
    assert model.report["best_valid_recall@10"] == max(recalls) == recalls[best - 1]
    assert len(epochs) == 30 or len(epochs) == best + 2  # stopped exactly `patience` epochs after the best
    assert model.item_embeddings.shape == (train.n_items, 16)


def test_youtubednn_rejects_misaligned_valid_targets():
    from llm_i2i.i2i.youtubednn import YoutubeDNN, YoutubeDNNConfig

    model = YoutubeDNN(YoutubeDNNConfig(**{**YOUTUBEDNN_FAST, "hidden_dims": (32, 16)}))
    with pytest.raises(ValueError, match="valid_targets"):
        model.fit(random_train(), np.zeros(3, np.int64))


def test_youtubednn_config_requires_tower_to_end_at_embedding_dim():
    from llm_i2i.i2i.youtubednn import YoutubeDNNConfig

    with pytest.raises(ValueError, match="hidden_dims"):
        YoutubeDNNConfig(embedding_dim=64, hidden_dims=(128, 32)).validate()


def test_topk_from_dense_breaks_boundary_ties_by_index():
    from llm_i2i.i2i.base import topk_from_dense

    scores = np.full((3, 50), 3.0)
    scores[0, :6] = [1.0, 2.0, 2.0, 2.0, 2.0, 0.5]
    scores[0, 6:] = 0.0
    scores[1, ::-1] = np.arange(50) // 10  # five blocks of ten tied values
    idx, sc = topk_from_dense(scores, 3, exclude_self=False)
    assert idx.tolist() == [[1, 2, 3], [0, 1, 2], [0, 1, 2]]
    assert sc.tolist() == [[2.0] * 3, [4.0] * 3, [3.0] * 3]


@pytest.mark.slow
@pytest.mark.parametrize("dataset,paper_r10", [("Beauty", 0.0506), ("Toys_and_Games", 0.0616)])
def test_swing_reproduces_paper_table2_recall_at_10(shared_data_dir, dataset, paper_r10):
    """The paper's Table 2 Swing no-aug R@10 (arXiv 2512.21595), within 25%, under the 'paper' preset."""
    from llm_i2i.data import leave_one_out, load_dataset
    from llm_i2i.eval.evaluate import evaluate_neighbors
    from llm_i2i.eval.protocol import EvalConfig
    from llm_i2i.i2i import make_backbone

    split = leave_one_out(load_dataset(str(shared_data_dir / dataset)).sequences())
    nb = make_backbone("swing").fit(split.train)
    r10 = evaluate_neighbors(nb, split, EvalConfig.from_preset("paper", ks=(10,)))["recall@10"]
    assert abs(r10 - paper_r10) / paper_r10 < 0.25, r10
