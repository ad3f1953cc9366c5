"""Quality of the generator / discriminator: validation metrics during SFT and the evaluate stage's numbers.

These load or hold a model, so they run where the model lives: in the training worker (per-epoch selection and
the final metrics written into the checkpoint manifest) or in a runner's worker (`SFTRunner.call`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm_i2i.data import LeaveOneOut, leave_one_out, load_dataset
from llm_i2i.eval.discriminator import roc_auc
from llm_i2i.eval.evaluate import evaluate_topk
from llm_i2i.eval.protocol import EvalConfig
from llm_i2i.llm.modeling import load_checkpoint
from llm_i2i.llm.prompts import titles_from_items
from llm_i2i.llm.scoring import MAX_BATCH_TOKENS, next_item_scores, topn_items, yes_probability
from llm_i2i.llm.sft_config import SFTConfig
from llm_i2i.llm.sft_data import Prepared, swing_neighbors
from llm_i2i.llm.tokenizer import item_vocabulary
from llm_i2i.progress import Progress


def evaluation_device() -> str:
    """CUDA when this process has a usable one, else CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def select_metric(cfg: SFTConfig, model, prep: Prepared, max_users: int | None) -> tuple[str, float]:
    """The validation number the best epoch is picked by."""
    model.eval()
    try:
        if cfg.role == "generator":
            m = generator_metrics(model, prep.tokenizer, prep.split, EvalConfig(split="valid", ks=(10,)),
                                  cfg.max_history, True, max_users, cfg.eval_batch_size, prep.titles,
                                  cfg.eval_batch_tokens)
            return "ndcg@10", m["ndcg@10"]
        return "auc", auc_on_split(model, prep.tokenizer, prep.split, "valid", None, cfg.max_history, max_users,
                                   cfg.seed, cfg.eval_batch_size, prep.titles, cfg.eval_batch_tokens)
    finally:
        model.train()


def final_metrics(cfg: SFTConfig, model, prep: Prepared) -> dict[str, Any]:
    if cfg.role == "generator":
        m = generator_metrics(model, prep.tokenizer, prep.split, EvalConfig(split="valid", ks=(10,)),
                              cfg.max_history, True, None, cfg.eval_batch_size, prep.titles, cfg.eval_batch_tokens)
        return {"valid_exclude_history": True, "valid_recall@10": m["recall@10"], "valid_ndcg@10": m["ndcg@10"],
                "valid_long_tail_recall@10": m["long_tail"]["recall@10"], "valid_long_tail_ndcg@10": m["long_tail"]["ndcg@10"]}
    return {"valid_auc_random": auc_on_split(model, prep.tokenizer, prep.split, "valid", None, cfg.max_history,
                                            None, cfg.seed, cfg.eval_batch_size, prep.titles, cfg.eval_batch_tokens)}


def generator_topk(model, tokenizer, hist, rows: np.ndarray, history_len: int, exclude_history: bool, k: int,
                   batch_size: int = 512, titles=None, max_tokens: int = MAX_BATCH_TOKENS) -> np.ndarray:
    """Top-k dense items [len(rows), k] for users `rows` of `hist` (Sequences) from their last `history_len` items."""
    ids, _ = item_vocabulary(tokenizer)
    if not np.array_equal(ids, hist.item_ids):
        raise ValueError("the checkpoint's items differ from the dataset's; was it trained on this dataset?")
    out = np.full((len(rows), k), -1, dtype=np.int64)
    prog = Progress(len(rows), "generator top-k", unit="user", every_s=10)
    for s in range(0, len(rows), batch_size):
        users = rows[s : s + batch_size]
        seqs = [hist.user(u) for u in users]
        scores = next_item_scores(model, tokenizer, [hist.item_ids[q[-history_len:]].tolist() for q in seqs],
                                  titles=titles, max_history=history_len, batch_size=batch_size, max_tokens=max_tokens)
        excl = [q.tolist() for q in seqs] if exclude_history else None
        out[s : s + len(users)], _ = topn_items(scores, k, excl)
        prog.update(len(users))
    return out


def generator_metrics(model, tokenizer, split: LeaveOneOut, eval_cfg: EvalConfig, history_len: int,
                      exclude_history: bool, max_users: int | None = None, batch_size: int = 512, titles=None,
                      max_tokens: int = MAX_BATCH_TOKENS) -> dict:
    targets = split.targets(eval_cfg.split)
    rows = np.flatnonzero(targets >= 0)
    if max_users and len(rows) > max_users:
        rows = np.sort(np.random.default_rng(0).choice(rows, max_users, replace=False))
    sub = np.full(len(targets), -1, np.int64)
    sub[rows] = targets[rows]
    topk = np.full((len(targets), eval_cfg.max_k), -1, dtype=np.int64)
    topk[rows] = generator_topk(model, tokenizer, split.history(eval_cfg.split), rows, history_len, exclude_history,
                                eval_cfg.max_k, batch_size, titles, max_tokens)
    masked = _MaskedTargets(split, sub)
    return evaluate_topk(topk, masked, eval_cfg)


class _MaskedTargets:
    """A LeaveOneOut view that evaluates only a subset of users (the rest get target -1)."""

    def __init__(self, split: LeaveOneOut, targets: np.ndarray):
        self._split, self._targets = split, targets

    def targets(self, which: str) -> np.ndarray:
        return self._targets

    def __getattr__(self, name):
        return getattr(self._split, name)


def evaluate_generator(checkpoint: str | Path, dataset_dir: str | Path, eval_cfg: EvalConfig, history_len: int = 10,
                       exclude_history: bool = True, max_users: int | None = None) -> dict[str, Any]:
    """The generator used alone as a recommender: top-K from each user's last `history_len` items."""
    model, tok, manifest = load_checkpoint(checkpoint, device=evaluation_device())
    ds = load_dataset(dataset_dir)
    split = leave_one_out(ds.sequences())
    titles = titles_from_items(ds.items) if manifest.get("sft_config", {}).get("titles") else None
    m = generator_metrics(model, tok, split, eval_cfg, history_len, exclude_history, max_users, titles=titles)
    m["generator"] = {"checkpoint": str(checkpoint), "history_len": history_len, "exclude_history": exclude_history}
    return m


def auc_pairs(split: LeaveOneOut, which: str, hard_neighbors, max_history: int, max_users: int | None,
              seed: int) -> tuple[list[list[int]], list[int], np.ndarray]:
    """(histories, candidates, labels) as external ids: each evaluated user's held-out target (positive) and one
    sampled negative, never an item the user touched (random, or from the Swing neighbours of the last item)."""
    targets = split.targets(which)
    hist = split.history(which)
    rows = np.flatnonzero(targets >= 0)
    rng = np.random.default_rng(seed + 1)
    if max_users and len(rows) > max_users:
        rows = np.sort(rng.choice(rows, max_users, replace=False))
    full = split.full
    histories, cands, labels = [], [], []
    for u in rows:
        h = hist.user(u)[-max_history:]
        seen = set(full.user(u).tolist())
        neg = -1
        if hard_neighbors is not None and len(h):
            nb, _ = hard_neighbors.row(int(h[-1]))
            pool = [j for j in nb[:50].tolist() if j not in seen]
            neg = int(rng.choice(pool)) if pool else -1
        while neg < 0 or neg in seen:
            neg = int(rng.integers(full.n_items))
        ext = hist.item_ids[h].tolist()
        histories += [ext, ext]
        cands += [int(hist.item_ids[targets[u]]), int(hist.item_ids[neg])]
        labels += [1, 0]
    return histories, cands, np.array(labels)


def pair_scores(model, tokenizer, split: LeaveOneOut, which: str, hard_neighbors, max_history: int,
                max_users: int | None, seed: int, batch_size: int = 512, titles=None,
                max_tokens: int = MAX_BATCH_TOKENS) -> tuple[np.ndarray, np.ndarray]:
    """(labels, P(Yes)) of the discriminator on `auc_pairs`."""
    histories, cands, labels = auc_pairs(split, which, hard_neighbors, max_history, max_users, seed)
    p = yes_probability(model, tokenizer, histories, cands, titles=titles, max_history=max_history, batch_size=batch_size,
                        max_tokens=max_tokens)
    return labels, p


def auc_on_split(model, tokenizer, split: LeaveOneOut, which: str, hard_neighbors, max_history: int,
                 max_users: int | None, seed: int, batch_size: int = 512, titles=None,
                 max_tokens: int = MAX_BATCH_TOKENS) -> float:
    """ROC-AUC of the discriminator's P(Yes) on `auc_pairs`."""
    return roc_auc(*pair_scores(model, tokenizer, split, which, hard_neighbors, max_history, max_users, seed,
                                batch_size, titles, max_tokens))


NEGATIVES = ("random", "hard")


def discriminator_scores(checkpoint: str | Path, dataset_dir: str | Path, negatives: tuple[str, ...] = NEGATIVES,
                         split: str = "test", max_users: int | None = None, seed: int = 0) -> dict[str, dict]:
    """Per negative kind ("random": uniform over unseen items; "hard": from the Swing neighbours of the user's
    last item), the `auc_pairs` held-out positives and negatives as {"labels", "scores" (P(Yes))}; one model load."""
    bad = [n for n in negatives if n not in NEGATIVES]
    if bad or not negatives:
        raise ValueError(f"negatives must be among {NEGATIVES}, got {negatives!r}")
    model, tok, manifest = load_checkpoint(checkpoint, device=evaluation_device())
    ds = load_dataset(dataset_dir)
    loo = leave_one_out(ds.sequences())
    sc = manifest.get("sft_config", {})
    titles = titles_from_items(ds.items) if sc.get("titles") else None
    out = {}
    for kind in negatives:
        hard = swing_neighbors(loo.train) if kind == "hard" else None
        # scored in batches of the checkpoint's own eval caps: long (titled) prompts on a large base need small ones
        labels, p = pair_scores(model, tok, loo, split, hard, int(sc.get("max_history", 10)), max_users, seed,
                                int(sc.get("eval_batch_size", 512)), titles,
                                int(sc.get("eval_batch_tokens", MAX_BATCH_TOKENS)))
        out[kind] = {"labels": labels, "scores": p}
    return out


def discriminator_auc(checkpoint: str | Path, dataset_dir: str | Path, negatives: str = "random", split: str = "valid",
                      max_users: int | None = None, seed: int = 0) -> float:
    """ROC-AUC of P(Yes) on held-out positives vs random (or Swing-hard) negatives."""
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be 'random' or 'hard', got {negatives!r}")
    s = discriminator_scores(checkpoint, dataset_dir, (negatives,), split, max_users, seed)[negatives]
    return roc_auc(s["labels"], s["scores"])
