"""The one interface every I2I backbone implements, and its output: top-K neighbours per item."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from llm_i2i.data.sequences import Sequences

NEIGHBORS_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("neighbor_id", pa.int64(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
    ]
)


@dataclass
class Neighbors:
    """CSR top-K lists over dense item indices: row i is `neighbors[indptr[i]:indptr[i+1]]`,
    sorted by score descending, ties by neighbour index ascending; an item never lists itself."""

    indptr: np.ndarray  # int64 [n_items + 1]
    neighbors: np.ndarray  # int32 [nnz] dense item indices
    scores: np.ndarray  # float64 [nnz]
    item_ids: np.ndarray  # int64 [n_items] external ids

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        s, e = self.indptr[i], self.indptr[i + 1]
        return self.neighbors[s:e], self.scores[s:e]

    def to_table(self) -> pa.Table:
        lens = np.diff(self.indptr)
        rank = np.arange(len(self.neighbors)) - np.repeat(self.indptr[:-1], lens)
        return pa.table(
            {
                "item_id": np.repeat(self.item_ids, lens),
                "neighbor_id": self.item_ids[self.neighbors],
                "score": self.scores.astype(np.float32),
                "rank": rank.astype(np.int32),
            },
            schema=NEIGHBORS_SCHEMA,
        )

    @classmethod
    def from_table(cls, table: pa.Table, item_ids: np.ndarray | None = None) -> "Neighbors":
        """Rebuild from `neighbors.parquet`; `item_ids` fixes the vocabulary (default: ids in the table)."""
        src = table.column("item_id").to_numpy()
        dst = table.column("neighbor_id").to_numpy()
        score = table.column("score").to_numpy().astype(np.float64)
        rank = table.column("rank").to_numpy()
        if item_ids is None:
            item_ids = np.unique(np.concatenate([src, dst]))
        si, di = np.searchsorted(item_ids, src), np.searchsorted(item_ids, dst)
        order = np.lexsort((rank, si))
        counts = np.bincount(si, minlength=len(item_ids))
        indptr = np.zeros(len(item_ids) + 1, np.int64)
        np.cumsum(counts, out=indptr[1:])
        return cls(indptr, di[order].astype(np.int32), score[order], np.asarray(item_ids, np.int64))

    @classmethod
    def from_rows(cls, rows: list[tuple[np.ndarray, np.ndarray]], item_ids: np.ndarray) -> "Neighbors":
        """From per-item (neighbour indices, scores) pairs, already sorted."""
        lens = np.array([len(r[0]) for r in rows], np.int64)
        indptr = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lens, out=indptr[1:])
        nb = np.concatenate([r[0] for r in rows]).astype(np.int32) if rows else np.zeros(0, np.int32)
        sc = np.concatenate([r[1] for r in rows]).astype(np.float64) if rows else np.zeros(0)
        return cls(indptr, nb, sc, np.asarray(item_ids, np.int64))


def topk_from_dense(scores: np.ndarray, k: int, exclude_self: bool = True) -> "tuple[np.ndarray, np.ndarray]":
    """Row-wise top-k of a dense item x item score block (rows are items `0..n-1` of the block's
    columns when exclude_self). Returns (idx [n, k], scores [n, k]) sorted; -inf marks absent."""
    s = np.array(scores, dtype=np.float64, copy=True)
    n, m = s.shape
    if exclude_self:
        s[np.arange(n), np.arange(n)] = -np.inf
    k = min(k, m)
    part = np.argpartition(-s, k - 1, axis=1)[:, :k] if k < m else np.tile(np.arange(m), (n, 1))
    ps = np.take_along_axis(s, part, 1)
    if k < m:  # argpartition picks arbitrarily among values tied with the k-th: re-pick those rows by index
        kth = ps.min(1)
        tied = np.flatnonzero(np.isfinite(kth) & ((s >= kth[:, None]).sum(1) > k))
        for r in tied:
            cand = np.flatnonzero(s[r] >= kth[r])
            part[r] = cand[np.lexsort((cand, -s[r, cand]))][:k]
            ps[r] = s[r, part[r]]
    order = np.lexsort((part, -ps), axis=1)
    return np.take_along_axis(part, order, 1), np.take_along_axis(ps, order, 1)


def neighbors_from_dense_topk(idx: np.ndarray, sc: np.ndarray, item_ids: np.ndarray) -> Neighbors:
    """Drop -inf / non-finite entries (items with fewer than k real neighbours)."""
    keep = np.isfinite(sc)
    lens = keep.sum(1)
    indptr = np.zeros(len(idx) + 1, np.int64)
    np.cumsum(lens, out=indptr[1:])
    return Neighbors(indptr, idx[keep].astype(np.int32), sc[keep].astype(np.float64), np.asarray(item_ids, np.int64))


class I2IModel(abc.ABC):
    """Fit on users' sequences, return each item's top-K neighbours (self excluded).

    `valid_targets[u]` (dense item, -1 if none) is the item that follows user u's sequence; models
    that early-stop use it, the rest ignore it. `n_real[u]`: user u's first n_real[u] items are real, the rest
    synthetic (appended by LLM-I2I's fuse stage); None = all real. BM25 down-weights synthetic rows
    (`synthetic_weight`), the others treat every row alike.
    """

    name: ClassVar[str]
    config: Any

    @abc.abstractmethod
    def fit(self, train: Sequences, valid_targets: np.ndarray | None = None,
            n_real: np.ndarray | None = None) -> Neighbors: ...


def cosine_neighbors(
    embeddings: np.ndarray, k: int, item_ids: np.ndarray, active: np.ndarray | None = None, block_rows: int = 1024
) -> Neighbors:
    """Top-k cosine neighbours of every item from its embedding row, computed `block_rows` items at a
    time so memory stays O(block_rows * n_items) instead of a dense n_items^2 matrix.

    Items outside `active` (default: items with a non-zero embedding) get no neighbours and are never
    anyone's neighbour; self is excluded; ties broken by item index. Scores are rounded to 1e-12 so
    that float noise from the matrix product (which differs between columns and block sizes) does not
    decide between equal cosines, e.g. of duplicate embeddings."""
    emb = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(emb, axis=1)
    ok = norms > 0 if active is None else np.asarray(active, bool) & (norms > 0)
    unit = np.where(ok[:, None], emb / np.where(norms > 0, norms, 1.0)[:, None], 0.0)
    n = len(emb)
    idx_parts, sc_parts = [], []
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        block = np.round(unit[start:stop] @ unit.T, 12)
        block[:, ~ok] = -np.inf
        block[~ok[start:stop]] = -np.inf
        block[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        idx, sc = topk_from_dense(block, k, exclude_self=False)
        idx_parts.append(idx)
        sc_parts.append(sc)
    if not idx_parts:
        return Neighbors(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0), np.asarray(item_ids, np.int64))
    return neighbors_from_dense_topk(np.concatenate(idx_parts), np.concatenate(sc_parts), item_ids)
