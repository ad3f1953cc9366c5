"""Data augmentation (paper §3.3): real training interactions + the synthetic pairs the discriminator accepts.

Rules, in order, each counted in the report (nothing is dropped silently):

* a synthetic candidate is dropped if its generation/scoring failed (`error` not null), if its user or item
  is not in the training vocabulary, if its rank is >= `max_rank` (Figure 5a's N), if its confidence is below
  `threshold` (when `use_discriminator`), if the user already has that item in the training history, or if it
  repeats an earlier candidate of the same user;
* the paper keeps pairs the discriminator answers "Yes" with confidence 1.0; P(Yes) of a small model rarely
  reaches 1.0 and its scale differs per dataset, so the default cut is `auto`: `cut.choose_cuts` picks it per
  backbone on that backbone's VALIDATION Recall@10 (possibly "keep none"), and `resolve` writes a chosen cut into
  the config;
* kept synthetic items join the user's sequence AFTER the real training history, in generator rank order
  (timestamp = position), so sequence-aware backbones see them as the most recent clicks;
* `filter_real` ("w/o generator" ablation): real training interactions the discriminator scores below
  `real_threshold` are dropped as noise; unscored real pairs are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llm_i2i.data.schema import SOURCE_REAL, SOURCE_SYNTHETIC
from llm_i2i.data.sequences import Sequences
from llm_i2i.i2i import BACKBONES


AUTO = "auto"
PLAIN_YES = 0.5  # "w/o threshold": every pair the discriminator answers Yes, P(Yes) >= 0.5


@dataclass
class FuseConfig:
    # keep synthetic pairs with P(Yes) >= threshold; "auto": the cut with the best VALIDATION Recall@10
    threshold: float | str = AUTO
    # the cuts `auto` tries: confidence quantiles that keep these fractions of the scored candidates (plus
    # "keep none"), so the grid follows each discriminator's own scale
    auto_kept_fractions: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
    # `auto` picks a cut per backbone. These (and the first backbone) are fitted at every cut above, which is cheap
    # for them; any other backbone chooses between "keep none" and the first backbone's cut from the two fits the
    # pipeline makes of it anyway (BPR and YoutubeDNN fits take minutes each on Beauty)
    auto_curve_backbones: tuple[str, ...] = ("swing", "bm25")
    # a cut is kept only if it beats "keep none" on validation by this many standard errors of a paired sign test
    # over users ((gained - lost) / sqrt(gained + lost)); 1.645 = one-sided 5%, 0 = any net gain
    auto_min_gain_z: float = 1.645
    use_discriminator: bool = True  # False = "w/o discriminator": every generated pair is kept
    add_synthetic: bool = True  # False = "w/o generator": no synthetic pairs at all
    max_rank: int | None = None  # keep generator ranks < max_rank (Figure 5a's N; None = all generated)
    filter_real: bool = False  # drop real training pairs the discriminator scores below real_threshold
    real_threshold: float = 0.5

    def validate(self) -> None:
        numeric = isinstance(self.threshold, (int, float)) and not isinstance(self.threshold, bool)
        if self.threshold != AUTO and not (numeric and 0.0 <= self.threshold <= 1.0):
            raise ValueError(f"fuse.threshold must be 'auto' or a number in [0, 1], got {self.threshold!r}")
        if not self.auto_kept_fractions or any(not 0 < f <= 1 for f in self.auto_kept_fractions):
            raise ValueError(f"fuse.auto_kept_fractions must be in (0, 1], got {self.auto_kept_fractions}")
        unknown = sorted(set(self.auto_curve_backbones) - set(BACKBONES))
        if unknown:
            raise ValueError(f"fuse.auto_curve_backbones: unknown backbone(s) {unknown}; choose from {sorted(BACKBONES)}")
        if not self.auto_min_gain_z >= 0:
            raise ValueError(f"fuse.auto_min_gain_z must be >= 0, got {self.auto_min_gain_z}")
        if not 0.0 <= self.real_threshold <= 1.0:
            raise ValueError(f"fuse.real_threshold must be in [0, 1], got {self.real_threshold}")
        if self.max_rank is not None and self.max_rank <= 0:
            raise ValueError(f"fuse.max_rank must be positive or null, got {self.max_rank}")

    @property
    def needs_cut(self) -> bool:
        """True when this config still has to be given the `auto` cut before `fuse` can run."""
        return self.threshold == AUTO and self.use_discriminator and self.add_synthetic

    def resolve(self, cut: float | None) -> "FuseConfig":
        """This config with the chosen cut (None = "keep none": no synthetic pair helped on validation)."""
        if not self.needs_cut:
            return self
        return replace(self, add_synthetic=False) if cut is None else replace(self, threshold=float(cut))


@dataclass
class Fused:
    sequences: Sequences  # aligned with the training split: same users in the same order, same item vocabulary
    n_real: np.ndarray  # real items per user (the first n_real[u] items of each sequence)
    report: dict[str, Any]

    def to_table(self) -> pa.Table:
        """The augmented canonical interaction table (`source` says real or synthetic; timestamp = position)."""
        s = self.sequences
        position = np.arange(len(s.items)) - np.repeat(s.indptr[:-1], s.lengths)
        synthetic = position >= np.repeat(self.n_real, s.lengths)
        return s.to_interactions(pc.if_else(pa.array(synthetic), SOURCE_SYNTHETIC, SOURCE_REAL))


def _ints(table: pa.Table, name: str) -> np.ndarray:
    """A column as int64, -1 where null (a failed row carries no item or rank; it is dropped as an error)."""
    return pc.fill_null(table.column(name), -1).to_numpy().astype(np.int64)


def _dense(train: Sequences, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    users = _ints(table, "user_id")
    pos = np.searchsorted(train.user_ids, users)
    pos = np.clip(pos, 0, max(train.n_users - 1, 0))
    u = np.where(train.user_ids[pos] == users, pos, -1) if train.n_users else np.full(len(users), -1)
    return u.astype(np.int64), train.item_index(_ints(table, "item_id"))


def _ok(table: pa.Table) -> np.ndarray:
    if "error" not in table.column_names:
        return np.ones(table.num_rows, bool)
    return ~np.asarray(pc.is_valid(table.column("error")))


def _confidence(table: pa.Table, where: str) -> np.ndarray:
    if "confidence" not in table.column_names:
        raise ValueError(f"{where}: no 'confidence' column (have {table.column_names}); run the discriminate stage first")
    return np.nan_to_num(table.column("confidence").to_numpy(zero_copy_only=False).astype(np.float64), nan=-1.0)


def fuse(train: Sequences, candidates: pa.Table | None, cfg: FuseConfig, real_scores: pa.Table | None = None) -> Fused:
    """`candidates`: user_id, item_id, rank[, confidence, error]. `real_scores`: user_id, item_id, confidence[, error]."""
    n_items = np.int64(train.n_items)
    lens = train.lengths
    user_of = np.repeat(np.arange(train.n_users, dtype=np.int64), lens)
    history_keys = user_of * n_items + train.items
    keep_real = np.ones(len(train.items), bool)
    if cfg.needs_cut:
        raise ValueError("fuse.threshold is 'auto': choose the cut first (pipeline.cut.choose_cuts, FuseConfig.resolve)")
    report: dict[str, Any] = {"config": dict(cfg.__dict__), "real": {"train_interactions": int(len(train.items))}}

    if cfg.filter_real:
        if real_scores is None:
            raise ValueError("fuse.filter_real=true needs the discriminator's scores of real pairs (discriminate.score_real)")
        u, i = _dense(train, real_scores)
        ok = _ok(real_scores) & (u >= 0) & (i >= 0)
        noisy = ok & (_confidence(real_scores, "real pair scores") < cfg.real_threshold)
        keep_real = ~np.isin(history_keys, u[noisy] * n_items + i[noisy])
        report["real"].update(scored=int(ok.sum()), score_errors=int((~_ok(real_scores)).sum()),
                              dropped_as_noise=int((~keep_real).sum()))
    report["real"]["kept"] = int(keep_real.sum())

    syn_u = np.zeros(0, np.int64)
    syn_i = np.zeros(0, np.int64)
    counts: dict[str, int] = {"generated": 0 if candidates is None else candidates.num_rows}
    if candidates is not None and not cfg.add_synthetic:  # "w/o generator", the baseline, or "keep none"
        counts["dropped_synthetic_off"] = candidates.num_rows
    if cfg.add_synthetic and candidates is not None:
        n = candidates.num_rows
        u, i = _dense(train, candidates)
        rank = _ints(candidates, "rank")
        drop = np.zeros(n, bool)

        def step(name: str, mask: np.ndarray) -> None:
            counts[name] = int((mask & ~drop).sum())
            drop[:] |= mask

        step("dropped_error", ~_ok(candidates))
        step("dropped_unknown_user_or_item", (u < 0) | (i < 0))
        if cfg.max_rank is not None:
            step("dropped_rank_ge_max_rank", rank >= cfg.max_rank)
        if cfg.use_discriminator:
            step("dropped_below_threshold", _confidence(candidates, "candidates") < cfg.threshold)
        keys = u * n_items + i
        step("dropped_in_history", np.isin(keys, history_keys))
        order = np.lexsort((rank, u))  # per user, best rank first
        order = order[~drop[order]]
        _, first = np.unique(keys[order], return_index=True)
        dup = np.ones(len(order), bool)
        dup[first] = False
        counts["dropped_duplicate"] = int(dup.sum())
        order = order[~dup]  # still by (user, rank)
        syn_u, syn_i = u[order], i[order]
    counts["kept"] = int(len(syn_u))
    report["synthetic"] = counts

    n_real = np.bincount(user_of[keep_real], minlength=train.n_users).astype(np.int64)
    n_syn = np.bincount(syn_u, minlength=train.n_users).astype(np.int64)
    indptr = np.zeros(train.n_users + 1, np.int64)
    np.cumsum(n_real + n_syn, out=indptr[1:])
    items = np.empty(indptr[-1], np.int32)
    real_pos = indptr[:-1][user_of[keep_real]] + (np.arange(keep_real.sum()) - np.repeat(
        np.concatenate([[0], np.cumsum(n_real)[:-1]]), n_real))
    items[real_pos] = train.items[keep_real]
    syn_start = np.concatenate([[0], np.cumsum(n_syn)[:-1]])
    syn_pos = indptr[:-1][syn_u] + n_real[syn_u] + (np.arange(len(syn_u)) - np.repeat(syn_start, n_syn))
    items[syn_pos] = syn_i
    report["fused_interactions"] = int(indptr[-1])
    report["users_with_synthetic"] = int((n_syn > 0).sum())
    return Fused(Sequences(train.user_ids, indptr, items, train.item_ids), n_real, report)
