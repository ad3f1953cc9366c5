import numpy as np
import pytest

from llm_i2i.data import leave_one_out, load_dataset
from llm_i2i.eval.evaluate import evaluate_neighbors, evaluate_topk, format_table
from llm_i2i.eval.metrics import hit_ranks, rank_metrics
from llm_i2i.eval.protocol import EvalConfig
from llm_i2i.i2i.swing import Swing


def test_rank_metrics_by_hand():
    topk = np.array([[3, 1, 2], [2, 3, 1], [1, 2, 3], [1, 2, 3]])
    targets = np.array([1, 9, 1, -1])
    ranks = hit_ranks(topk, targets)
    assert ranks.tolist() == [1, -1, 0, -1]
    m = rank_metrics(ranks[:3], (1, 2))
    assert m["recall@1"] == pytest.approx(1 / 3) and m["recall@2"] == pytest.approx(2 / 3)
    assert m["ndcg@2"] == pytest.approx((1 / np.log2(3) + 1) / 3)


def test_perfect_ranking_scores_one_and_splits_long_tail():
    split = leave_one_out(load_dataset(None, n_users=200, n_items=80).sequences())
    cfg = EvalConfig(ks=(1, 5))
    targets = split.targets("test")
    topk = np.where(targets[:, None] >= 0, targets[:, None], -1).repeat(5, 1)
    m = evaluate_topk(topk, split, cfg)
    assert m["recall@1"] == 1.0 and m["ndcg@5"] == 1.0
    assert m["long_tail"]["users"] + m["non_long_tail"]["users"] == m["users_evaluated"] == 200
    assert m["protocol"]["preset"] == "paper"


def test_presets_and_validation():
    s = EvalConfig.from_preset("serving")
    assert (s.num_triggers, s.mask_history) == (100, True)
    assert EvalConfig.from_preset("paper", num_triggers=3).preset == "custom"
    with pytest.raises(ValueError):
        EvalConfig.from_preset("paper", split="train")


def test_swing_beats_popularity_on_default_data():
    split = leave_one_out(load_dataset(None).sequences())
    cfg = EvalConfig.from_preset("serving")
    m = evaluate_neighbors(Swing().fit(split.train), split, cfg)
    pop = np.argsort(-split.train.item_counts(), kind="stable")[:200]
    m_pop = evaluate_topk(np.tile(pop, (split.full.n_users, 1)), split, cfg)
    assert m["recall@10"] > 1.5 * m_pop["recall@10"]
    assert "| long-tail |" in format_table(m)
