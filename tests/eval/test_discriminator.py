"""The discriminator's quality metrics against hand computation and brute force: ROC-AUC, the reliability table
and its expected calibration error, and the precision of synthetic pairs against held-out truth."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_i2i.data import Sequences, leave_one_out
from llm_i2i.eval.discriminator import (auc_or_none, candidate_quality, held_out_hits, precision, reliability,
                                        roc_auc)


def brute_auc(labels, scores) -> float:
    """Every (positive, negative) pair: 1 if the positive scores higher, 1/2 on a tie."""
    pos = [s for y, s in zip(labels, scores) if y]
    neg = [s for y, s in zip(labels, scores) if not y]
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (len(pos) * len(neg))


def brute_reliability(labels, scores, bins):
    """Per bin (floor(s * bins), 1.0 in the last): count, mean score, positive rate; ECE as a plain loop."""
    members = [[] for _ in range(bins)]
    for y, s in zip(labels, scores):
        members[min(int(s * bins), bins - 1)].append((y, s))
    ece = sum(len(m) / len(scores) * abs(sum(y for y, _ in m) / len(m) - sum(s for _, s in m) / len(m))
              for m in members if m)
    return [len(m) for m in members], ece


labelled = st.lists(st.tuples(st.booleans(), st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5, 0.75, 0.9, 1.0])),
                    min_size=1, max_size=60)


def test_auc_by_hand():
    assert roc_auc([1, 0, 1, 0], [0.8, 0.3, 0.4, 0.4]) == 0.875  # pairs: 1, 1, 1, tie 1/2
    assert roc_auc([1, 1, 0], [0.1, 0.2, 0.9]) == 0.0
    assert auc_or_none([1, 1], [0.1, 0.2]) is None and auc_or_none([0], [0.3]) is None
    with pytest.raises(ValueError, match="both positives and negatives"):
        roc_auc([1, 1], [0.1, 0.2])


@settings(max_examples=150, deadline=None)
@given(labelled)
def test_auc_matches_every_pair_and_ignores_monotone_rescaling(pairs):
    labels, scores = np.array([y for y, _ in pairs]), np.array([s for _, s in pairs])
    if labels.all() or not labels.any():
        assert auc_or_none(labels, scores) is None
        return
    assert roc_auc(labels, scores) == pytest.approx(brute_auc(labels, scores))
    assert roc_auc(labels, scores ** 3 + 2) == pytest.approx(roc_auc(labels, scores))
    assert roc_auc(~labels, scores) == pytest.approx(1 - roc_auc(labels, scores))


def test_reliability_by_hand():
    t = reliability([0, 1, 1, 0, 1], [0.0, 0.05, 0.95, 1.0, 0.45], bins=2)
    low, high = t["bins"]
    assert (low["lo"], low["hi"], high["lo"], high["hi"]) == (0.0, 0.5, 0.5, 1.0)
    assert low["count"] == 3 and low["mean_confidence"] == pytest.approx(0.5 / 3) and low["positive_rate"] == 2 / 3
    assert high["count"] == 2 and high["mean_confidence"] == 0.975 and high["positive_rate"] == 0.5  # 1.0 is in it
    assert t["ece"] == pytest.approx(3 / 5 * (2 / 3 - 0.5 / 3) + 2 / 5 * 0.475)
    assert (t["n"], t["positives"]) == (5, 3)
    empty = reliability([1, 0, 0, 0], [0.25] * 4, bins=4)  # observed rate 1/4 = confidence: calibrated
    assert empty["ece"] == pytest.approx(0.0) and [b["count"] for b in empty["bins"]] == [0, 4, 0, 0]
    assert empty["bins"][0]["mean_confidence"] is None and empty["bins"][0]["positive_rate"] is None
    for bad in ([np.nan], [1.5], [-0.1]):
        with pytest.raises(ValueError, match="probabilities"):
            reliability([1], bad)


@settings(max_examples=150, deadline=None)
@given(labelled, st.integers(1, 12))
def test_reliability_matches_a_plain_loop(pairs, bins):
    labels, scores = [y for y, _ in pairs], [s for _, s in pairs]
    t = reliability(labels, scores, bins)
    counts, ece = brute_reliability(labels, scores, bins)
    assert [b["count"] for b in t["bins"]] == counts and sum(counts) == t["n"] == len(pairs)
    assert t["ece"] == pytest.approx(ece) and 0.0 <= t["ece"] <= 1.0
    for b in t["bins"]:
        if b["count"]:
            assert b["lo"] - 1e-12 <= b["mean_confidence"] <= b["hi"] + 1e-12 and 0 <= b["positive_rate"] <= 1


def hand_split():
    """Items 10..50. User 1: 10 20 30 40 (valid 30, test 40); user 2: 20 50 (too short, no truth);
    user 5: 50 40 10 (valid 40, test 10)."""
    item_ids = np.array([10, 20, 30, 40, 50])
    seqs = [[0, 1, 2, 3], [1, 4], [4, 3, 0]]
    indptr = np.cumsum([0] + [len(s) for s in seqs])
    return leave_one_out(Sequences(np.array([1, 2, 5]), indptr, np.concatenate(seqs).astype(np.int32), item_ids))


def test_held_out_hits_by_hand():
    users = [1, 1, 1, 2, 5, 5, 9, 1]
    items = [40, 30, 20, 50, 10, 40, 10, 99]  # user 9 is unknown, item 99 too
    ev, test, valid = held_out_hits(hand_split(), users, items)
    assert ev.tolist() == [True, True, True, False, True, True, False, True]
    assert test.tolist() == [True, False, False, False, True, False, False, False]
    assert valid.tolist() == [False, True, False, False, False, True, False, False]
    assert precision(test[ev], valid[ev]) == {"pairs": 6, "test_hits": 2, "test": 2 / 6, "valid_or_test_hits": 4,
                                              "valid_or_test": 4 / 6}
    assert precision(np.zeros(0, bool), np.zeros(0, bool))["test"] is None


def test_candidate_quality_by_hand():
    candidates = pa.table({
        "user_id": [1, 1, 1, 5, 5, 2, 1, 5],
        "item_id": [40, 30, 20, 10, 30, 50, 50, 20],
        "confidence": pa.array([0.9, 0.6, 0.2, 0.4, 0.95, 0.7, None, 0.3], pa.float32()),
        "error": [None, None, None, None, None, None, "engine failed", None],
        "rank": [0, 1, 2, 0, 1, 0, 0, 2],
    })
    kept = pa.table({"user_id": [1, 1, 1, 5, 5, 2], "item_id": [10, 40, 30, 50, 10, 50],
                     "source": ["real", "synthetic", "synthetic", "real", "synthetic", "synthetic"]})
    q = candidate_quality(hand_split(), candidates, {"kept": kept}, bins=2)
    assert q["counts"] == {"candidates": 8, "not_scored": 1, "user_not_evaluated": 1, "pairs": 6}
    # scored pairs of evaluated users: (1,40) .9 test; (1,30) .6 valid; (1,20) .2; (5,10) .4 test; (5,30) .95; (5,20) .3
    assert q["auc"]["test"] == pytest.approx(brute_auc([1, 0, 0, 1, 0, 0], [0.9, 0.6, 0.2, 0.4, 0.95, 0.3]))
    assert q["generator_rank_auc_test"] == 1.0  # both test hits are rank 0, every other pair ranks lower
    assert q["auc"]["valid"] == pytest.approx(brute_auc([0, 1, 0, 0, 0, 0], [0.9, 0.6, 0.2, 0.4, 0.95, 0.3]))
    assert q["precision"]["generated"] == {"pairs": 6, "test_hits": 2, "test": 2 / 6, "valid_or_test_hits": 3,
                                           "valid_or_test": 3 / 6}
    # kept synthetic: (1,40) test, (1,30) valid, (5,10) test; (2,50) has no truth
    assert q["precision"]["kept"] == {"pairs": 3, "test_hits": 2, "test": 2 / 3, "valid_or_test_hits": 3,
                                      "valid_or_test": 1.0, "user_not_evaluated": 1}
    assert [b["count"] for b in q["calibration"]["bins"]] == [3, 3] and q["calibration"]["positives"] == 2


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_candidate_precision_matches_a_dictionary_of_truths(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items = 30, 12
    lens = rng.integers(1, 7, n_users)
    items = rng.integers(0, n_items, lens.sum()).astype(np.int32)
    user_ids = np.arange(n_users, dtype=np.int64) * 3
    split = leave_one_out(Sequences(user_ids, np.concatenate([[0], np.cumsum(lens)]), items, np.arange(n_items) * 7))
    seq = {int(u): [int(split.full.item_ids[j]) for j in split.full.user(r)] for r, u in enumerate(user_ids)}
    truth = {u: (s[-1], s[-2]) for u, s in seq.items() if len(s) >= 3}
    n = 200
    cu, ci = rng.choice(user_ids, n), rng.choice(split.full.item_ids, n)
    conf = rng.random(n).astype(np.float32)
    q = candidate_quality(split, pa.table({"user_id": cu, "item_id": ci, "confidence": conf}), {})
    assert q["generator_rank_auc_test"] is None  # no rank column
    rows = [(u, i, c) for u, i, c in zip(cu.tolist(), ci.tolist(), conf.tolist()) if u in truth]
    test = [i == truth[u][0] for u, i, _ in rows]
    either = [i in truth[u] for u, i, _ in rows]
    gen = q["precision"]["generated"]
    assert gen["pairs"] == len(rows) and gen["test_hits"] == sum(test) and gen["valid_or_test_hits"] == sum(either)
    if 0 < sum(test) < len(rows):
        assert q["auc"]["test"] == pytest.approx(brute_auc(test, [c for *_, c in rows]))
    else:
        assert q["auc"]["test"] is None
