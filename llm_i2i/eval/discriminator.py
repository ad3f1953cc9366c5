"""How good the discriminator is, from scores already computed: ROC-AUC, a reliability (calibration) table with
expected calibration error, and the precision of synthetic (user, item) pairs against held-out truth.

Plain numpy/pyarrow over the leave-one-out split; the evaluate stage feeds it the AUC pairs' P(Yes) (scored where
the model lives), the discriminate stage's scored candidates and the fuse stage's kept table, so nothing is
re-scored here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llm_i2i.data import LeaveOneOut
from llm_i2i.data.schema import SOURCE_SYNTHETIC

CALIBRATION_BINS = 10


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney ROC-AUC with average ranks for ties: P(score of a positive > a negative's), ties count 1/2."""
    from scipy.stats import rankdata

    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC-AUC needs both positives and negatives")
    r = rankdata(scores)
    return float((r[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_or_none(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """`roc_auc`, or None when one class is absent (e.g. no generated pair hit a held-out item)."""
    labels = np.asarray(labels).astype(bool)
    return roc_auc(labels, scores) if labels.any() and not labels.all() else None


def reliability(labels: np.ndarray, scores: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Equal-width bins of P(Yes) on [0, 1] (the last one closed): per bin `count`, `mean_confidence`,
    `positive_rate` (null when empty); `ece` = sum over bins of count/n * |positive_rate - mean_confidence|."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    if len(labels) != len(scores):
        raise ValueError(f"{len(labels)} labels but {len(scores)} scores")
    if not np.all(np.isfinite(scores)) or np.any((scores < 0) | (scores > 1)):
        raise ValueError("reliability: scores must be probabilities in [0, 1]")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    which = np.minimum((scores * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins)
    conf = np.bincount(which, weights=scores, minlength=bins)
    pos = np.bincount(which, weights=labels.astype(np.float64), minlength=bins)
    rows, ece = [], 0.0
    for b in range(bins):
        n = int(count[b])
        row = {"lo": b / bins, "hi": (b + 1) / bins, "count": n, "mean_confidence": None, "positive_rate": None}
        if n:
            row["mean_confidence"], row["positive_rate"] = conf[b] / n, pos[b] / n
            ece += n / len(scores) * abs(row["positive_rate"] - row["mean_confidence"])
        rows.append(row)
    return {"n": int(len(scores)), "positives": int(labels.sum()), "ece": float(ece) if len(scores) else None,
            "bins": rows}


def scored_pairs_quality(labels: np.ndarray, scores: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """AUC and reliability table of one labelled set of P(Yes) scores."""
    return {"auc": auc_or_none(labels, scores), "pairs": int(len(labels)), "calibration": reliability(labels, scores, bins)}


def held_out_hits(split: LeaveOneOut, user_ids: np.ndarray, item_ids: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For (user, item) pairs in external ids: (evaluated, is the user's test item, is the user's valid item).
    `evaluated` is False for users unknown to the split or too short to hold out a test item (they have no truth)."""
    full = split.full
    users = np.asarray(user_ids, dtype=np.int64)
    if not full.n_users:
        none = np.zeros(len(users), bool)
        return none, none, none.copy()
    row = np.clip(np.searchsorted(full.user_ids, users), 0, full.n_users - 1)
    known = full.user_ids[row] == users
    items = full.item_index(item_ids)
    test, valid = split.targets("test")[row], split.targets("valid")[row]
    evaluated = known & (test >= 0)
    return evaluated, evaluated & (test == items), evaluated & (valid == items)


def precision(is_test: np.ndarray, is_valid: np.ndarray) -> dict[str, Any]:
    """Share of pairs whose item is the user's test item, and its valid or test item (null for no pairs)."""
    n, t, vt = len(is_test), int(np.sum(is_test)), int(np.sum(np.asarray(is_test) | np.asarray(is_valid)))
    return {"pairs": n, "test_hits": t, "test": t / n if n else None,
            "valid_or_test_hits": vt, "valid_or_test": vt / n if n else None}


def _ok_scored(candidates: pa.Table) -> np.ndarray:
    ok = np.ones(candidates.num_rows, bool)
    if "error" in candidates.column_names:
        ok &= ~np.asarray(pc.is_valid(candidates.column("error")))
    for c in ("user_id", "item_id", "confidence"):
        ok &= np.asarray(pc.is_valid(candidates.column(c)))
    conf = pc.fill_null(candidates.column("confidence"), np.nan).to_numpy(zero_copy_only=False).astype(np.float64)
    return ok & np.isfinite(conf)


def _ids(table: pa.Table, column: str) -> np.ndarray:
    return pc.fill_null(table.column(column), -1).to_numpy(zero_copy_only=False).astype(np.int64)


def candidate_quality(split: LeaveOneOut, candidates: pa.Table, kept: dict[str, pa.Table],
                      bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """The discriminator on the generator's own candidates (`candidates`: user_id, item_id, confidence[, error]).

    Pairs whose scoring failed and pairs of users with no held-out test item are left out and counted. Returns
    `auc` (`test`: label = the item is the user's test item; `valid`: its validation item),
    `generator_rank_auc_test` (the generator's rank as the score, same pairs and labels), `calibration` (the
    reliability table with the test label), and `precision` of `generated` (every scored candidate) and of each
    fused set in `kept` (name -> interaction table; only its `source=synthetic` rows are the pairs)."""
    ok = _ok_scored(candidates)
    scored = candidates.filter(pa.array(ok))
    evaluated, is_test, is_valid = held_out_hits(split, _ids(scored, "user_id"), _ids(scored, "item_id"))
    conf = scored.column("confidence").to_numpy(zero_copy_only=False).astype(np.float64)[evaluated]
    is_test, is_valid = is_test[evaluated], is_valid[evaluated]
    out: dict[str, Any] = {
        "counts": {"candidates": candidates.num_rows, "not_scored": int((~ok).sum()),
                   "user_not_evaluated": int((~evaluated).sum()), "pairs": int(evaluated.sum())},
        "auc": {"test": auc_or_none(is_test, conf), "valid": auc_or_none(is_valid, conf)},
        # the reference the discriminator has to beat: the generator's own rank (best first) on the same pairs
        "generator_rank_auc_test": auc_or_none(is_test, -_ids(scored, "rank")[evaluated])
        if "rank" in scored.column_names else None,
        "calibration": reliability(is_test, conf, bins),
        "precision": {"generated": precision(is_test, is_valid)},
    }
    for name, table in kept.items():
        syn = table.filter(pc.equal(table.column("source"), SOURCE_SYNTHETIC))
        ev, t, v = held_out_hits(split, _ids(syn, "user_id"), _ids(syn, "item_id"))
        out["precision"][name] = {**precision(t[ev], v[ev]), "user_not_evaluated": int((~ev).sum())}
    return out
