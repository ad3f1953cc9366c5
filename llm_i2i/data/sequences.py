"""Users' time-ordered item sequences as CSR arrays over a dense item index (what the algorithms eat)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llm_i2i.data.schema import SOURCE_REAL, SOURCE_SYNTHETIC, DataError, interaction_table


@dataclass
class Sequences:
    """`items[indptr[u]:indptr[u+1]]` is user u's history, oldest first, as dense item indices.

    `item_ids[j]` is the external id of dense item j; `user_ids[u]` the external id of user u.
    """

    user_ids: np.ndarray  # int64 [n_users]
    indptr: np.ndarray  # int64 [n_users + 1]
    items: np.ndarray  # int32 [nnz]
    item_ids: np.ndarray  # int64 [n_items], sorted

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def __len__(self) -> int:
        return self.n_users

    def user(self, u: int) -> np.ndarray:
        return self.items[self.indptr[u] : self.indptr[u + 1]]

    def item_index(self, external_ids) -> np.ndarray:
        """External item ids -> dense indices; -1 where unknown."""
        ext = np.asarray(external_ids, dtype=np.int64)
        pos = np.searchsorted(self.item_ids, ext)
        pos = np.clip(pos, 0, max(self.n_items - 1, 0))
        ok = (self.n_items > 0) & (self.item_ids[pos] == ext) if self.n_items else np.zeros(len(ext), bool)
        return np.where(ok, pos, -1).astype(np.int64)

    def slice_each(self, start: int | None = None, stop: int | None = None) -> "Sequences":
        """Apply `seq[start:stop]` to every user's sequence (e.g. stop=-2 for the train split)."""
        lens = self.lengths
        s = np.zeros_like(lens) if start is None else _norm(start, lens)
        e = lens.copy() if stop is None else _norm(stop, lens)
        e = np.maximum(e, s)
        new_lens = e - s
        indptr = np.zeros(len(lens) + 1, dtype=np.int64)
        np.cumsum(new_lens, out=indptr[1:])
        idx = np.repeat(self.indptr[:-1] + s - indptr[:-1], new_lens) + np.arange(indptr[-1])
        return Sequences(self.user_ids, indptr, self.items[idx], self.item_ids)

    def last(self, offset: int = 1) -> np.ndarray:
        """The item `offset` from the end of each user's sequence (-1 if the sequence is too short)."""
        lens = self.lengths
        pos = self.indptr[1:] - offset
        return np.where(lens >= offset, self.items[np.clip(pos, 0, max(len(self.items) - 1, 0))], -1)

    def item_counts(self) -> np.ndarray:
        return np.bincount(self.items, minlength=self.n_items)

    def to_interactions(self, source: str | pa.Array = SOURCE_REAL) -> pa.Table:
        """The canonical interaction table; timestamp = position in the user's sequence."""
        lens = self.lengths
        pos = np.arange(len(self.items)) - np.repeat(self.indptr[:-1], lens)
        return interaction_table(np.repeat(self.user_ids, lens), self.item_ids[self.items], pos, source)


def _norm(i: int, lens: np.ndarray) -> np.ndarray:
    return np.clip(lens + i if i < 0 else np.full_like(lens, i), 0, lens)


def _sequence_order(interactions: pa.Table) -> np.ndarray:
    """Row order of the sequences: by user, then timestamp, then row."""
    users = interactions.column("user_id").to_numpy()
    ts = interactions.column("timestamp").to_numpy()
    return np.lexsort((np.arange(len(users)), ts, users))


def real_items_per_user(interactions: pa.Table, seqs: Sequences, where: str) -> np.ndarray | None:
    """`n_real` for `I2IModel.fit` from the `source` column of the table `seqs` was built from: real items per
    user, or None when every row is real. A fused table (the pipeline's `fuse/dataset`) puts each user's synthetic
    rows after the real ones; a synthetic row ordered before a real one of the same user cannot be told apart by
    position, so it is refused."""
    if "source" not in interactions.column_names:
        return None
    # compared in Arrow: an all-real table (every reader's) costs one pass, no Python strings and no second sort
    marks = pc.equal(interactions.column("source"), SOURCE_SYNTHETIC)
    if not pc.any(marks).as_py():
        return None
    synthetic = marks.to_numpy()[_sequence_order(interactions)]
    user_of = np.repeat(np.arange(seqs.n_users), seqs.lengths)
    real_after = ~synthetic[1:] & synthetic[:-1] & (user_of[1:] == user_of[:-1])
    if real_after.any():
        u = int(user_of[1:][real_after][0])
        raise DataError(f"{where}: user {int(seqs.user_ids[u])} has a real interaction after a synthetic one "
                        "(timestamp order); synthetic rows must follow the user's real history")
    return np.bincount(user_of[~synthetic], minlength=seqs.n_users).astype(np.int64)


def sequences_from_interactions(interactions: pa.Table, item_ids: np.ndarray | None = None) -> Sequences:
    """Group by user, order by (timestamp, row order). `item_ids` fixes the dense vocabulary."""
    order = _sequence_order(interactions)
    users = interactions.column("user_id").to_numpy()[order]
    items = interactions.column("item_id").to_numpy()[order]
    if item_ids is None:
        item_ids = np.unique(items)
    item_ids = np.asarray(item_ids, dtype=np.int64)
    dense = np.searchsorted(item_ids, items)
    if len(items) and (np.any(dense >= len(item_ids)) or np.any(item_ids[np.minimum(dense, len(item_ids) - 1)] != items)):
        missing = np.setdiff1d(items, item_ids)[:5]
        raise DataError(f"interactions: item_id(s) {missing.tolist()} not in the item vocabulary")
    user_ids, starts = np.unique(users, return_index=True)
    indptr = np.append(starts, len(users)).astype(np.int64)
    return Sequences(user_ids.astype(np.int64), indptr, dense.astype(np.int32), item_ids)
