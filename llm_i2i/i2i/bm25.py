"""BM25 item-item neighbours, as the paper ran it: benfred/implicit's `BM25Recommender` (K=20).

implicit weights the item x user count matrix with BM25 (items are the documents, users the terms):

    W[i, u] = c[i, u] * (K1 + 1) / (K1 * ((1 - B) + B * |i| / avg|i|) + c[i, u]) * idf[u]
    idf[u]  = log(n_items) - log1p(#items of user u),     |i| = sum_u c[i, u]

and scores sim(i, j) = sum_u W[i, u] * W[j, u] (an unnormalised dot product), keeping the K largest
entries of each row *including the item itself* (implicit's `all_pairs_knn`). So K=20 means an item's
index row holds at most 20 entries before self is dropped, usually 19 others: BM25 never fills the
200-slot index; `k` only truncates further.

Synthetic rows (LLM-I2I) count `synthetic_weight` instead of 1 in c[i, u]. One real co-click is enough for
BM25 to link two items, so on sparse data its short rows already hold most next-item links; synthetic rows at
full weight add neighbours that push real ones down and out (docs/quickstart.md, "BM25 and the cut"). At a
small weight they only fill empty slots and break ties between real co-clicks.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from llm_i2i.data.sequences import Sequences
from llm_i2i.i2i.base import I2IModel, Neighbors


@dataclass
class BM25Config:
    k: int = 200  # index size (at most K - self survive, see module docstring)
    K: int = 20  # neighbours implicit keeps per item, self included (the paper's setting)
    K1: float = 1.2
    B: float = 0.75
    num_threads: int = 0  # 0 = all cores; rows are independent, so results do not depend on it
    # a synthetic row's count relative to a real one (chosen on quickstart VALIDATION Recall@10, 3 seeds: 0.01 >=
    # 0.1 > 0.5 > 1; docs/quickstart.md)
    synthetic_weight: float = 0.01

    def validate(self) -> None:
        if self.k <= 0:
            raise ValueError(f"bm25.k must be positive, got {self.k}")
        if self.K <= 0:
            raise ValueError(f"bm25.K must be positive, got {self.K}")
        if self.K1 < 0:
            raise ValueError(f"bm25.K1 must be >= 0, got {self.K1}")
        if not 0.0 <= self.B <= 1.0:
            raise ValueError(f"bm25.B must be in [0, 1], got {self.B}")
        if self.num_threads < 0:
            raise ValueError(f"bm25.num_threads must be >= 0, got {self.num_threads}")
        if not 0.0 < self.synthetic_weight <= 1.0:
            raise ValueError(f"bm25.synthetic_weight must be in (0, 1], got {self.synthetic_weight}")


def user_item_counts(train: Sequences, n_real: np.ndarray | None = None, synthetic_weight: float = 1.0) -> sp.csr_matrix:
    """users x items CSR of interaction counts (repeats summed), float64 - what implicit's fit takes. With
    `n_real`, rows past each user's first n_real[u] are synthetic and count `synthetic_weight`."""
    users = np.repeat(np.arange(train.n_users, dtype=np.int64), train.lengths)
    weight = np.ones(len(users), np.float64)
    if n_real is not None:
        position = np.arange(len(users)) - np.repeat(train.indptr[:-1], train.lengths)
        weight[position >= np.repeat(np.asarray(n_real, np.int64), train.lengths)] = synthetic_weight
    m = sp.csr_matrix((weight, (users, train.items.astype(np.int64))), shape=(train.n_users, train.n_items))
    m.sum_duplicates()
    return m


def neighbors_from_similarity(sim: sp.spmatrix, k: int, item_ids: np.ndarray) -> Neighbors:
    """Sparse item x item similarity -> Neighbors: self dropped, rows sorted by score desc then index,
    cut to k. Entries that are not finite are dropped."""
    coo = sim.tocoo()
    keep = (coo.row != coo.col) & np.isfinite(coo.data)
    rows, cols, vals = coo.row[keep].astype(np.int64), coo.col[keep].astype(np.int64), coo.data[keep].astype(np.float64)
    order = np.lexsort((cols, -vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    n = len(item_ids)
    starts = np.searchsorted(rows, np.arange(n))
    rank = np.arange(len(rows)) - starts[rows]
    sel = rank < k
    rows, cols, vals = rows[sel], cols[sel], vals[sel]
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return Neighbors(indptr, cols.astype(np.int32), vals, np.asarray(item_ids, np.int64))


class BM25(I2IModel):
    name = "bm25"

    def __init__(self, config: BM25Config | None = None):
        self.config = config or BM25Config()
        self.config.validate()
        self.report: dict = {}

    def fit(self, train: Sequences, valid_targets: np.ndarray | None = None,
            n_real: np.ndarray | None = None) -> Neighbors:
        from implicit.nearest_neighbours import BM25Recommender

        cfg = self.config
        counts = user_item_counts(train, n_real, cfg.synthetic_weight)
        model = BM25Recommender(K=cfg.K, K1=cfg.K1, B=cfg.B, num_threads=cfg.num_threads)
        with warnings.catch_warnings():  # implicit hands its own COO weighting to itself and warns about it
            warnings.filterwarnings("ignore", message="Method expects CSR input")
            model.fit(counts, show_progress=False)
        nb = neighbors_from_similarity(model.similarity, cfg.k, train.item_ids)
        self.report = {"user_item_pairs": int(counts.nnz), "similarity_entries": int(model.similarity.nnz)}
        return nb
